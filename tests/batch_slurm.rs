//! `sam2-tui batch --slurm` against a real Slurm started by the test on this machine
//! (munged, slurmctld and slurmd from Debian's packages, one node: this host): the array's
//! masks equal a local run's; a task cancelled mid-item leaves nothing partial, and
//! submitting again runs exactly the missing items.
mod common;

use common::batch_outputs::frames_of;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// A one-node Slurm cluster (and its own munged) that lives as long as this value:
/// dropping it cancels its jobs and stops every daemon it started.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(&'static str, Child)>,
}

fn require(tool: &str) -> PathBuf {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(d).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} not found: `scripts/setup.sh --test` installs slurm-wlm and munge");
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let host =
            String::from_utf8(Command::new("hostname").arg("-s").output().unwrap().stdout).unwrap().trim().to_string();
        let dir = dir.to_path_buf();
        let munge = dir.join("munge");
        for d in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&munge, std::fs::Permissions::from_mode(0o700)).unwrap();
        let key: Vec<u8> =
            (0..1024u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 ^ std::process::id() as u8).collect();
        std::fs::write(munge.join("key"), key).unwrap();
        std::fs::set_permissions(munge.join("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let socket = munge.join("sock");
        // Ports of their own, so that another Slurm on this host is not disturbed.
        let port = 20000 + (std::process::id() % 20000) as u16 * 2;
        let conf = dir.join("slurm.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "ClusterName=sam2test\nSlurmctldHost={host}\nSlurmctldPort={port}\nSlurmdPort={}\n\
                 AuthType=auth/munge\nAuthInfo=socket={}\nCredType=cred/munge\nSlurmUser=root\nSlurmdUser=root\n\
                 StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\nSlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nJobAcctGatherType=jobacct_gather/none\n\
                 AccountingStorageType=accounting_storage/none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\n\
                 MpiDefault=none\nReturnToService=2\nKillWait=10\n\
                 NodeName={host} CPUs=2 State=UNKNOWN\nPartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
                port + 1,
                socket.display()
            ),
        )
        .unwrap();
        let mut cluster = Cluster { dir: dir.clone(), conf: conf.clone(), daemons: vec![] };
        let spawn = |name: &'static str, cmd: &mut Command| {
            let log = std::fs::File::create(dir.join("log").join(format!("{name}.out"))).unwrap();
            (name, cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap_or_else(|e| panic!("{name}: {e}")))
        };
        // -f: the scratch folder's parents are not munge's idea of a private path.
        cluster.daemons.push(spawn(
            "munged",
            Command::new(require("munged"))
                .args(["-F", "-f"])
                .arg(format!("--key-file={}", munge.join("key").display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", munge.join("pid").display()))
                .arg(format!("--seed-file={}", munge.join("seed").display()))
                .arg(format!("--log-file={}", munge.join("log").display())),
        ));
        cluster.wait_for("munged's socket", || socket.exists());
        cluster.daemons.push(spawn("slurmctld", Command::new(require("slurmctld")).arg("-D").arg("-f").arg(&conf)));
        cluster.daemons.push(spawn("slurmd", Command::new(require("slurmd")).arg("-D").arg("-f").arg(&conf)));
        cluster.wait_for("the node to be idle in sinfo", || {
            let o = cluster.slurm("sinfo", &["-h", "-o", "%t"]);
            String::from_utf8_lossy(&o.stdout).trim() == "idle"
        });
        cluster
    }

    fn slurm(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(require(tool)).args(args).env("SLURM_CONF", &self.conf).stdin(Stdio::null()).output().unwrap()
    }

    /// Polls `ready` (every 50 ms, up to 3 minutes): Slurm offers no event to wait on.
    fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !ready() {
            if Instant::now() > deadline {
                let logs: String = std::fs::read_dir(self.dir.join("log"))
                    .unwrap()
                    .flatten()
                    .map(|e| {
                        format!(
                            "--- {}\n{}\n",
                            e.path().display(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Array tasks of `job` still queued or running ("5_0", "5_[1-2]", …).
    fn tasks(&self, job: &str) -> Vec<String> {
        let o = self.slurm("squeue", &["-h", "-r", "-j", job, "-o", "%i"]);
        String::from_utf8_lossy(&o.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }

    fn wait_job(&self, job: &str) {
        self.wait_for(&format!("job {job} to end"), || self.tasks(job).is_empty());
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.slurm("scancel", &["-u", "root"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let o = self.slurm("squeue", &["-h"]);
            if !o.status.success() || o.stdout.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for (_, child) in self.daemons.iter_mut().rev() {
            // SAFETY: signals a child this value started, by its pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let stop = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < stop {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn checkpoint() -> PathBuf {
    let path = common::fixture_cache("batch-slurm").join("sam2.1_hiera_tiny.random-init.safetensors");
    if !path.exists() {
        let st = Command::new(common::bin()).args(["weights", "init-random"]).arg(&path).status().unwrap();
        assert!(st.success());
    }
    path
}

fn batch(cluster: &Cluster, manifest: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(common::bin())
        .arg("batch")
        .arg(manifest)
        .arg("--out")
        .arg(out)
        .arg("--checkpoint")
        .arg(checkpoint())
        .args(["--device", "cpu", "--image-size", "128"])
        .args(extra)
        .env("SLURM_CONF", &cluster.conf)
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap()
}

fn submit(cluster: &Cluster, manifest: &Path, out: &Path) -> String {
    let r = batch(cluster, manifest, out, &["--slurm", "--array-size", "3"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let id = String::from_utf8_lossy(&r.stdout).trim().to_string();
    assert!(id.parse::<u64>().is_ok(), "sbatch job id: {id:?}");
    id
}

fn complete(out: &Path, names: &[String]) -> BTreeMap<String, SystemTime> {
    names
        .iter()
        .filter(|n| out.join(n).join(".sam2-tui-output").is_file() && out.join(n).join("masks.json").is_file())
        .map(|n| (n.clone(), std::fs::metadata(out.join(n).join("masks.json")).unwrap().modified().unwrap()))
        .collect()
}

fn staging_left(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sam2-tui"))
        .collect()
}

/// The array task a process belongs to (from its environment).
fn task_of(pid: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0)
        .find_map(|kv| std::str::from_utf8(kv).ok()?.strip_prefix("SLURM_ARRAY_TASK_ID=").map(String::from))
}

#[test]
fn a_slurm_array_gives_the_local_masks_and_a_cancelled_task_is_finished_by_resubmitting_only_the_missing_items() {
    let dir = common::scratch("batch-slurm");
    std::fs::write(
        dir.join("prompts.json"),
        r#"{"objects":[{"id":1,"frame":0,"points":[[40,30,1]]},{"id":2,"frame":0,"box":[70,10,110,50]}]}"#,
    )
    .unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("clip{i}")).collect();
    let mut manifest_text = String::new();
    for (i, n) in names.iter().enumerate() {
        common::pattern_clip(&dir.join(format!("{n}.mp4")), 4, i as u32 * 3);
        manifest_text += &format!("{{\"input\":\"{n}.mp4\",\"prompts\":\"prompts.json\",\"out\":\"{n}\"}}\n");
    }
    let manifest = dir.join("manifest.jsonl");
    std::fs::write(&manifest, manifest_text).unwrap();
    let cluster = Cluster::start(&dir.join("slurm"));

    let local = dir.join("local");
    let r = batch(&cluster, &manifest, &local, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // The whole manifest as an array of 3 tasks.
    let array = dir.join("array");
    let job = submit(&cluster, &manifest, &array);
    cluster.wait_job(&job);
    for n in &names {
        assert_eq!(
            frames_of(&array.join(n)),
            frames_of(&local.join(n)),
            "{n}: the array's masks differ from the local run's"
        );
    }
    for i in 0..3 {
        let rep: serde_json::Value =
            serde_json::from_slice(&std::fs::read(array.join(format!("batch-report-{i}-of-3.json"))).unwrap()).unwrap();
        assert_eq!(rep["finished"], true);
        assert!(rep["items"].as_array().unwrap().iter().all(|it| it["status"] == "done"), "{rep}");
    }

    // Cancel one task while it is inside an item: its staging folder names its pid.
    let cancelled = dir.join("cancelled");
    let job = submit(&cluster, &manifest, &cancelled);
    let mut victim = None;
    cluster.wait_for("an array task to be mid-item", || {
        victim = std::fs::read_dir(&cancelled).into_iter().flatten().flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(".sam2-tui-segment-")?.split(['-', '@']).next()?.to_string();
            task_of(&pid)
        });
        victim.is_some()
    });
    let victim = victim.unwrap();
    let r = cluster.slurm("scancel", &[&format!("{job}_{victim}")]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    cluster.wait_job(&job);
    assert!(staging_left(&cancelled).is_empty(), "a cancelled task left {:?}", staging_left(&cancelled));
    let before = complete(&cancelled, &names);
    let missing: BTreeSet<String> = names.iter().filter(|n| !before.contains_key(*n)).cloned().collect();
    assert!(!missing.is_empty(), "the cancelled task should have left items to do");
    for n in &missing {
        assert!(!cancelled.join(n).exists(), "{n}: a cancelled item left a partial output");
    }

    // Submitting again runs the cancelled task's shard only, and in it only what is missing.
    let job = submit(&cluster, &manifest, &cancelled);
    let script = std::fs::read_to_string(cancelled.join("batch-slurm.sbatch")).unwrap();
    assert!(script.contains(&format!("#SBATCH --array={victim}\n")), "{script}");
    cluster.wait_job(&job);
    let after = complete(&cancelled, &names);
    assert_eq!(after.len(), names.len(), "every item complete after resubmitting");
    for (n, t) in &before {
        assert_eq!(after[n], *t, "{n} was complete and ran again");
    }
    let rep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cancelled.join(format!("batch-report-{victim}-of-3.json"))).unwrap())
            .unwrap();
    let ran: BTreeSet<String> = rep["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "done")
        .map(|i| i["out"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ran, missing, "exactly the missing items ran");
    for n in &names {
        assert_eq!(frames_of(&cancelled.join(n)), frames_of(&local.join(n)), "{n}: differs from the local run");
    }
    assert!(staging_left(&cancelled).is_empty());

    let o = Command::new(common::bin())
        .arg("batch")
        .arg("--status")
        .arg(&cancelled)
        .env("SLURM_CONF", &cluster.conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("outputs complete: 6 of 6"), "{text}");
}
