//! Command line, `--only` globs and number formatting, as pybench's driver does them.

use multiproc::StartMethod;

pub(crate) const USAGE: &str = "usage: multiproc-bench [-h] [--reps REPS] [--raw] [--only P[,P]] \
     [--scale SCALE] [--method {fork,spawn,forkserver}] [--list]";

const HELP: &str = "\
pybench's metrics (shared/bench/pybench.py) measured on multiproc: one `name value unit`
line per metric, the value the median of --reps repetitions.

options:
  -h, --help            show this help message and exit
  --reps REPS           repetitions per metric; the median is printed (default 3)
  --raw                 print every repetition instead of the median
  --only P[,P]          fnmatch globs (`*`, `?`) on metric names
  --scale SCALE         multiply workload sizes (default 1.0)
  --method {fork,spawn,forkserver}
                        start method of the metrics that do not name one (default forkserver)
  --list                list the metrics and exit";

/// The parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Args {
    pub(crate) reps: usize,
    pub(crate) raw: bool,
    pub(crate) only: Vec<String>,
    /// The `--only` argument as given, for messages.
    pub(crate) only_raw: String,
    pub(crate) scale: f64,
    pub(crate) method: StartMethod,
    pub(crate) list: bool,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Parsed {
    Run(Args),
    Help,
}

/// Parses the arguments after the program name. Accepts `--opt value` and `--opt=value`.
pub(crate) fn parse_args(argv: impl IntoIterator<Item = String>) -> Result<Parsed, String> {
    let mut a = Args {
        reps: 3,
        raw: false,
        only: Vec::new(),
        only_raw: String::new(),
        scale: 1.0,
        method: StartMethod::ForkServer,
        list: false,
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |f: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or(format!("argument {f}: expected one argument"))
        };
        match flag.as_str() {
            "--raw" if inline.is_none() => a.raw = true,
            "--list" if inline.is_none() => a.list = true,
            "-h" | "--help" if inline.is_none() => return Ok(Parsed::Help),
            "--reps" => {
                let v = value("--reps")?;
                a.reps = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("argument --reps: invalid int value: {v:?}"))?;
            }
            "--scale" => {
                let v = value("--scale")?;
                a.scale = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("argument --scale: invalid float value: {v:?}"))?;
            }
            "--only" => {
                a.only_raw = value("--only")?;
                a.only = a
                    .only_raw
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(String::from)
                    .collect();
            }
            "--method" => {
                let v = value("--method")?;
                a.method = v.parse().map_err(|_| {
                    format!(
                        "argument --method: invalid choice: {v:?} (choose from 'fork', 'spawn', \
                         'forkserver')"
                    )
                })?;
            }
            _ => return Err(format!("unrecognized arguments: {arg}")),
        }
    }
    if a.reps < 1 || a.scale.is_nan() || a.scale <= 0.0 {
        return Err("--reps must be >= 1 and --scale > 0".into());
    }
    Ok(Parsed::Run(a))
}

/// The help text (`-h`).
pub(crate) fn help() -> String {
    format!("{USAGE}\n\n{HELP}")
}

/// Python's `fnmatch.fnmatchcase` restricted to `*` (any run of characters) and `?`
/// (any one character); every other character matches itself.
pub(crate) fn glob_match(name: &str, pattern: &str) -> bool {
    let s: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Greedy match with backtracking to the last `*` only: linear in practice.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (position of `*` in p, i when seen)
    while i < s.len() {
        if j < p.len() && (p[j] == '?' || (p[j] != '*' && p[j] == s[i])) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '*' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            // Let the last `*` swallow one more character and retry after it.
            star = Some((sj, si + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[j..].iter().all(|&c| c == '*')
}

/// pybench's `plain`: at least six significant digits, never in exponent notation
/// (`f"{v:.{max(1, 5 - floor(log10(|v|)))}f}"`; `repr` for zero and non-finite values).
pub(crate) fn plain(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let decimals = (5 - v.abs().log10().floor() as i64).max(1) as usize;
    format!("{v:.decimals$}")
}

/// Python's `statistics.median`: the middle value, or the mean of the two middle ones.
/// `values` must not be empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Result<Parsed, String> {
        parse_args(s.iter().map(|a| a.to_string()))
    }

    #[test]
    fn globs_like_fnmatchcase() {
        assert!(glob_match("proc_start_join_fork", "proc_*"));
        assert!(glob_match("proc_start_join_fork", "*fork"));
        assert!(glob_match("proc_start_join_fork", "*_join_*"));
        assert!(glob_match("proc_start_join_forkserver", "*fork*"));
        assert!(!glob_match("proc_start_join_forkserver", "*fork"));
        assert!(glob_match("pipe_rtt", "pipe_?tt"));
        assert!(!glob_match("pipe_rtt", "pipe_?"));
        assert!(glob_match("pipe_rtt", "pipe_rtt"));
        assert!(!glob_match("pipe_rtt2", "pipe_rtt"));
        assert!(glob_match("a", "*"));
        assert!(glob_match("", "*"));
        assert!(!glob_match("", "?"));
        assert!(glob_match("aXbXc", "a*b*c"));
        assert!(glob_match("abcbc", "a*bc"));
        assert!(!glob_match("Proc_x", "proc_*"));
    }

    #[test]
    fn plain_like_pybench() {
        // Values of Python's plain() for the same inputs.
        assert_eq!(plain(0.123456789), "0.123457");
        assert_eq!(plain(1.5), "1.50000");
        assert_eq!(plain(12.3456789), "12.3457");
        assert_eq!(plain(123456.7), "123456.7");
        assert_eq!(plain(1234567.0), "1234567.0");
        assert_eq!(plain(0.000123456789), "0.000123457");
        assert_eq!(plain(0.0), "0.0");
        assert_eq!(plain(f64::INFINITY), "inf");
        assert_eq!(plain(-2.5), "-2.50000");
    }

    #[test]
    fn median_like_statistics() {
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn parses_the_pybench_cli() {
        let Ok(Parsed::Run(a)) = args(&[
            "--raw",
            "--reps",
            "1",
            "--only",
            "proc_*,thread_*",
            "--scale=0.5",
            "--method",
            "fork",
        ]) else {
            panic!("parse failed")
        };
        assert!(a.raw && !a.list);
        assert_eq!(a.reps, 1);
        assert_eq!(a.only, ["proc_*", "thread_*"]);
        assert_eq!(a.scale, 0.5);
        assert_eq!(a.method, StartMethod::Fork);
        assert!(args(&["--reps", "0"]).is_err());
        assert!(args(&["--scale", "0"]).is_err());
        assert!(args(&["--method", "vfork"]).is_err());
        assert!(args(&["--bogus"]).is_err());
        assert!(args(&["--reps"]).is_err());
        assert!(matches!(args(&["--help"]), Ok(Parsed::Help)));
    }
}
