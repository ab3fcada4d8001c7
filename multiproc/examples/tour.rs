//! The tour: every scenario example, in order of scenario id, with its timing.
//!
//! ```text
//! cargo run --release --example tour               # all of them
//! cargo run --release --example tour -- S2 S28     # some, by id or example name
//! MULTIPROC_TOUR_FAST=1 cargo run --example tour   # the seeds' sleeps scaled down (S2, S5, S6, S12, S21, S29, S30, S32, S43)
//! ```
//!
//! Each scenario is the `run()` of its example file (`examples/sNN_*.rs`), included here
//! as a module, so `cargo run --example s01_process_hello` and the tour run the same
//! code. A scenario that fails (panics) is reported and the tour goes on; the exit code
//! says whether all passed.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

#[path = "s01_process_hello.rs"]
pub mod s01_process_hello;
#[path = "s02_parallel_sleep.rs"]
pub mod s02_parallel_sleep;
#[path = "s03_pipe.rs"]
pub mod s03_pipe;
#[path = "s04_queue_maxsize.rs"]
pub mod s04_queue_maxsize;
#[path = "s05_shared_value_lock.rs"]
pub mod s05_shared_value_lock;
#[path = "s06_pool_apply_async.rs"]
pub mod s06_pool_apply_async;
#[path = "s07_thread_ident.rs"]
pub mod s07_thread_ident;
#[path = "s08_raw_fork.rs"]
pub mod s08_raw_fork;
#[path = "s09_current_process.rs"]
pub mod s09_current_process;
#[path = "s10_pool_map.rs"]
pub mod s10_pool_map;
#[path = "s11_subprocess.rs"]
pub mod s11_subprocess;
#[path = "s12_queue_reader_writer.rs"]
pub mod s12_queue_reader_writer;
#[path = "s13_thread_names.rs"]
pub mod s13_thread_names;
#[path = "s14_process_lock_balance.rs"]
pub mod s14_process_lock_balance;
#[path = "s14_thread_lock_balance.rs"]
pub mod s14_thread_lock_balance;
#[path = "s15_thread_local.rs"]
pub mod s15_thread_local;
#[path = "s16_lock_rlock.rs"]
pub mod s16_lock_rlock;
#[path = "s16_process_lock_rlock.rs"]
pub mod s16_process_lock_rlock;
#[path = "s17_crash_isolation.rs"]
pub mod s17_crash_isolation;
#[path = "s19_separate_memory.rs"]
pub mod s19_separate_memory;
#[path = "s20_thread_styles.rs"]
pub mod s20_thread_styles;
#[path = "s21_thread_pool_executor.rs"]
pub mod s21_thread_pool_executor;
#[path = "s23_process_styles.rs"]
pub mod s23_process_styles;
#[path = "s26_terminate.rs"]
pub mod s26_terminate;
#[path = "s27_exit_codes.rs"]
pub mod s27_exit_codes;
#[path = "s28_daemon.rs"]
pub mod s28_daemon;
#[path = "s29_ticket.rs"]
pub mod s29_ticket;
#[path = "s30_queue.rs"]
pub mod s30_queue;
#[path = "s31_queue_between_processes.rs"]
pub mod s31_queue_between_processes;
#[path = "s32_producer_consumer.rs"]
pub mod s32_producer_consumer;
#[path = "s34_names_args.rs"]
pub mod s34_names_args;
#[path = "s39_lock_print.rs"]
pub mod s39_lock_print;
#[path = "s41_value_array.rs"]
pub mod s41_value_array;
#[path = "s42_manager.rs"]
pub mod s42_manager;
#[path = "s43_pool_timeout.rs"]
pub mod s43_pool_timeout;

/// Every scenario of the tour, in order of id: (id, example name, its `run`).
const SCENARIOS: &[(&str, &str, fn())] = &[
    ("S1", "s01_process_hello", s01_process_hello::run),
    ("S2", "s02_parallel_sleep", s02_parallel_sleep::run),
    ("S3", "s03_pipe", s03_pipe::run),
    ("S4", "s04_queue_maxsize", s04_queue_maxsize::run),
    ("S5", "s05_shared_value_lock", s05_shared_value_lock::run),
    ("S6", "s06_pool_apply_async", s06_pool_apply_async::run),
    ("S7", "s07_thread_ident", s07_thread_ident::run),
    ("S8", "s08_raw_fork", s08_raw_fork::run),
    ("S9", "s09_current_process", s09_current_process::run),
    ("S10", "s10_pool_map", s10_pool_map::run),
    ("S11", "s11_subprocess", s11_subprocess::run),
    (
        "S12",
        "s12_queue_reader_writer",
        s12_queue_reader_writer::run,
    ),
    ("S13", "s13_thread_names", s13_thread_names::run),
    (
        "S14",
        "s14_thread_lock_balance",
        s14_thread_lock_balance::run,
    ),
    (
        "S14",
        "s14_process_lock_balance",
        s14_process_lock_balance::run,
    ),
    ("S15", "s15_thread_local", s15_thread_local::run),
    ("S16", "s16_lock_rlock", s16_lock_rlock::run),
    ("S16", "s16_process_lock_rlock", s16_process_lock_rlock::run),
    ("S17", "s17_crash_isolation", s17_crash_isolation::run),
    ("S19", "s19_separate_memory", s19_separate_memory::run),
    ("S20", "s20_thread_styles", s20_thread_styles::run),
    (
        "S21",
        "s21_thread_pool_executor",
        s21_thread_pool_executor::run,
    ),
    ("S23", "s23_process_styles", s23_process_styles::run),
    ("S26", "s26_terminate", s26_terminate::run),
    ("S27", "s27_exit_codes", s27_exit_codes::run),
    ("S28", "s28_daemon", s28_daemon::run),
    ("S29", "s29_ticket", s29_ticket::run),
    ("S30", "s30_queue", s30_queue::run),
    (
        "S31",
        "s31_queue_between_processes",
        s31_queue_between_processes::run,
    ),
    ("S32", "s32_producer_consumer", s32_producer_consumer::run),
    ("S34", "s34_names_args", s34_names_args::run),
    ("S39", "s39_lock_print", s39_lock_print::run),
    ("S41", "s41_value_array", s41_value_array::run),
    ("S42", "s42_manager", s42_manager::run),
    ("S43", "s43_pool_timeout", s43_pool_timeout::run),
];

/// Whether the command line selects the scenario (no arguments: all of them).
fn selected(filters: &[String], id: &str, name: &str) -> bool {
    filters.is_empty()
        || filters
            .iter()
            .any(|f| f.eq_ignore_ascii_case(id) || f == name)
}

fn main() {
    multiproc::init();
    let filters: Vec<String> = std::env::args().skip(1).collect();
    let tour = Instant::now();
    let mut results: Vec<(&str, &str, Duration, bool)> = Vec::new();
    for &(id, name, run) in SCENARIOS
        .iter()
        .filter(|(id, name, _)| selected(&filters, id, name))
    {
        println!("== {id} {name} ==");
        let started = Instant::now();
        let passed = std::panic::catch_unwind(AssertUnwindSafe(run)).is_ok();
        let took = started.elapsed();
        if passed {
            println!("-- {id} took {:.3}s\n", took.as_secs_f64());
        } else {
            println!("-- {id} FAILED after {:.3}s\n", took.as_secs_f64());
        }
        results.push((id, name, took, passed));
    }
    assert!(!results.is_empty(), "no scenario matches {filters:?}");

    println!("== summary ==");
    println!("{:<5} {:<28} {:>9}  result", "id", "example", "seconds");
    for (id, name, took, passed) in &results {
        println!(
            "{id:<5} {name:<28} {:>9.3}  {}",
            took.as_secs_f64(),
            if *passed { "ok" } else { "FAILED" }
        );
    }
    let failed = results.iter().filter(|r| !r.3).count();
    println!(
        "{} scenarios, {} failed, {:.3}s in all",
        results.len(),
        failed,
        tour.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
