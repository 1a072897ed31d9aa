//! Key-to-frame latency of the real event loop while the engine floods it: a thread sends
//! Progress + Masks events as fast as a fast GPU would (thousands a second) while keys
//! arrive; for each key we time from sending it to the end of the first draw that had
//! handled it. Prints p50/p99/max; asserts only a generous bound.
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use sam2_tui::console::event_loop::{run, DrawReport, LoopOptions};
use sam2_tui::console::testing::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn key(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_to_frame_stays_fast_while_engine_events_flood_in() {
    let app = app_with_video(120, 40);
    let terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    let (key_tx, key_rx) = futures::channel::mpsc::unbounded::<std::io::Result<Event>>();
    let (eng_tx, eng_rx) = tokio::sync::mpsc::unbounded_channel();
    let (cmd_tx, _cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let (draw_tx, mut draw_rx) = tokio::sync::mpsc::unbounded_channel::<DrawReport>();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let shapes: Vec<_> = (0..4).map(|i| ellipse(200.0 + 40.0 * i as f32, 180.0, 90.0, 60.0)).collect();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..10 {
                    let frame = i % FRAMES;
                    if eng_tx.send(masks(frame, &[(1, shapes[i % 4].clone())])).is_err()
                        || eng_tx.send(progress(frame, i % FRAMES, FRAMES, 900.0)).is_err()
                    {
                        return;
                    }
                    i += 1;
                }
                sent.fetch_add(20, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(2000));
            }
        })
    };

    let opts = LoopOptions {
        max_redraw_fps: 60.0,
        tick: Duration::from_millis(250),
        preview: None,
        draws: Some(draw_tx),
        synchronized: false,
        export_dir: std::env::temp_dir(),
    };
    let looped = tokio::spawn(async move {
        let (mut terminal, mut app) = (terminal, app);
        run(&mut terminal, &mut app, key_rx, eng_rx, Some(cmd_tx), opts).await.unwrap();
        app
    });

    let started = Instant::now();
    let keys = ['l', 'j', 'h', 'k', '.', ','];
    let mut latencies = vec![];
    for n in 0..240u64 {
        let t0 = Instant::now();
        key_tx.unbounded_send(Ok(key(keys[n as usize % keys.len()]))).unwrap();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(5), draw_rx.recv())
                .await
                .expect("no draw within 5 s")
                .unwrap();
            if r.keys_seen > n {
                latencies.push(r.at.duration_since(t0));
                break;
            }
        }
        // Keys at human-ish but brisk intervals, not aligned with the redraw clock.
        tokio::time::sleep(Duration::from_micros(3000 + (n * 1777) % 9000)).await;
    }
    let elapsed = started.elapsed();
    key_tx.unbounded_send(Ok(key('q'))).unwrap();
    let app = tokio::time::timeout(Duration::from_secs(5), looped).await.expect("q quits").unwrap();
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    let events = sent.load(Ordering::Relaxed);
    println!(
        "key-to-frame over {} keys while {} engine events arrived ({:.0}/s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        events,
        events as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    assert!(events as f64 / elapsed.as_secs_f64() > 1000.0, "the flood was not a flood");
    assert!(app.perf.done > 0, "engine events were folded in");
    assert!(pct(0.99) < Duration::from_millis(200), "p99 {:?}", pct(0.99));
}
