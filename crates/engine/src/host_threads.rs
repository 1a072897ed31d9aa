//! Plain-Rust work of one frame spread over a few host threads: hole filling, the memory
//! bank's files, the masks' RLE encoding, object by object. Only code that runs no
//! libtorch op goes here: a thread's first libtorch op big enough to go parallel starts an
//! OpenMP team of its own, and sixteen such teams once spun on a 16-core host's sixteen
//! cores (see `VideoPredictor::write_out`).

/// The host's cores, as the standard library counts them (1 when it cannot tell).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` over `items` on up to `threads` threads, each taking a run of neighbouring items;
/// the results in the items' order. One thread (or one item) runs on the calling thread.
/// A panic in `f` is raised again here.
pub fn map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = threads.min(items.len());
    if threads < 2 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut runs: Vec<Vec<T>> = vec![];
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        runs.push(items.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            runs.into_iter().map(|run| scope.spawn(move || run.into_iter().map(f).collect::<Vec<R>>())).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_the_items_order_whatever_the_thread_count() {
        let items: Vec<u64> = (0..37).collect();
        let want: Vec<u64> = items.iter().map(|i| i * i).collect();
        for threads in [0, 1, 2, 3, 8, 64] {
            let seen = std::sync::Mutex::new(std::collections::HashSet::new());
            let got = map(items.clone(), threads, |i| {
                seen.lock().unwrap().insert(std::thread::current().id());
                i * i
            });
            assert_eq!(got, want, "{threads} threads");
            let used = seen.lock().unwrap().len();
            assert!(used <= threads.max(1), "{threads} threads asked, {used} used");
        }
        assert!(map(Vec::<u8>::new(), 4, |i| i).is_empty());
    }

    #[test]
    #[should_panic(expected = "item 5")]
    fn a_panic_in_a_worker_reaches_the_caller() {
        map((0..8).collect(), 4, |i: i32| assert_ne!(i, 5, "item 5"));
    }
}
