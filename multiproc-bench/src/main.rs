//! multiproc-bench: the metrics of `shared/bench/pybench.py` (the CPython baseline),
//! measured on multiproc, with the same names, units, definitions and command line, so
//! that `compare.py` can set the two side by side.
//!
//! Output: one `name value unit` line per metric, the value a plain decimal with six
//! significant digits or more (the median of `--reps` repetitions, or every repetition
//! with `--raw`). Options: `--raw --reps N --only P[,P] --scale F --method M --list`.
//!
//! Only the metrics implemented here are listed and run. A metric that fails (an error,
//! a failed check, a panic) is reported on stderr, the others still run, and the exit
//! status is then 1. A repetition running past its time limit (120 s, times `--scale`
//! when `--scale` > 1) ends the whole run with status 1 (its children die with it).

mod cli;
#[cfg(feature = "cluster")]
mod cluster;
mod metrics;

use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cli::{Args, Parsed};
use metrics::{Ctx, METRICS, Metric};

/// Time limit of one repetition at `--scale` <= 1 (pybench's `LIMIT_S`).
const LIMIT_S: f64 = 120.0;

multiproc::test_support!();

fn main() -> ExitCode {
    // First thing: a spawn child or the forkserver does its job here and never returns.
    multiproc::init();
    // Started as a cluster worker by the cluster metrics: be one, then exit.
    #[cfg(feature = "cluster")]
    multiproc::cluster::worker_main_if_requested();

    let args = match cli::parse_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::Help) => {
            println!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}\nmultiproc-bench: error: {e}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    if args.list {
        list();
        return ExitCode::SUCCESS;
    }
    run(&args)
}

fn list() {
    let width = METRICS.iter().map(|m| m.name.len()).max().unwrap_or(0);
    for m in METRICS {
        println!("{:width$}  {:8} {}", m.name, m.unit, m.desc);
    }
}

fn run(args: &Args) -> ExitCode {
    multiproc::set_start_method(args.method);
    let ctx = Ctx {
        scale: args.scale,
        method: args.method,
    };
    let selected: Vec<&Metric> = METRICS
        .iter()
        .filter(|m| args.only.is_empty() || args.only.iter().any(|p| cli::glob_match(m.name, p)))
        .collect();
    if selected.is_empty() {
        eprintln!(
            "multiproc-bench: no metric matches --only {:?}",
            args.only_raw
        );
        return ExitCode::SUCCESS;
    }

    let limit = Duration::from_secs_f64((LIMIT_S * args.scale.max(1.0)).ceil());
    // The watchdog is one more thread at every fork: it holds no lock while it waits,
    // so forked children are safe, and multiproc's warning about forking a
    // multi-threaded process would only be noise here.
    multiproc::process::set_fork_warning(false);
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(watchdog)
        .expect("cannot start the watchdog thread");

    let mut failed = Vec::new();
    for m in selected {
        match run_metric(m, &ctx, args, limit) {
            Ok(values) if !args.raw => print_line(m, cli::median(&values)),
            Ok(_) => {}
            Err(e) if e.starts_with(metrics::SKIPPED) => {
                eprintln!("multiproc-bench: {} {e}", m.name);
            }
            Err(e) => {
                eprintln!("multiproc-bench: {} failed: {e}", m.name);
                failed.push(m.name);
            }
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("multiproc-bench: failed: {}", failed.join(", "));
        ExitCode::from(1)
    }
}

/// Runs the `--reps` repetitions of `m` (printing each with `--raw`) under the watchdog.
fn run_metric(m: &Metric, ctx: &Ctx, args: &Args, limit: Duration) -> Result<Vec<f64>, String> {
    let mut values = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        arm(Some((m.name, limit)));
        let outcome = catch_unwind(AssertUnwindSafe(|| (m.run)(ctx)));
        arm(None);
        let value = match outcome {
            Ok(result) => result?,
            Err(payload) => return Err(format!("panicked: {}", panic_message(&*payload))),
        };
        values.push(value);
        if args.raw {
            print_line(m, value);
        }
    }
    Ok(values)
}

fn print_line(m: &Metric, value: f64) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{} {} {}", m.name, cli::plain(value), m.unit);
    let _ = out.flush();
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".into()
    }
}

// ---- watchdog ------------------------------------------------------------------------

/// The repetition now running: metric name, deadline, time limit.
type Armed = Option<(&'static str, Instant, Duration)>;

static ARMED: Mutex<Armed> = Mutex::new(None);
static ARMED_CHANGED: Condvar = Condvar::new();

/// Sets (or, with `None`, clears) the deadline of the repetition now starting.
fn arm(what: Option<(&'static str, Duration)>) {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    *armed = what.map(|(name, limit)| (name, Instant::now() + limit, limit));
    ARMED_CHANGED.notify_one();
}

/// Sleeps until the armed deadline; if a repetition is still running then, ends the run
/// (pybench's SIGALRM). Children die with this process (multiproc binds their life to it).
fn watchdog() {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        armed = match *armed {
            None => ARMED_CHANGED.wait(armed).unwrap_or_else(|e| e.into_inner()),
            Some((name, deadline, limit)) => {
                let now = Instant::now();
                if now >= deadline {
                    eprintln!(
                        "multiproc-bench: {name} failed: repetition ran past {} s; aborting the run",
                        limit.as_secs()
                    );
                    std::process::exit(1);
                }
                ARMED_CHANGED
                    .wait_timeout(armed, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}
