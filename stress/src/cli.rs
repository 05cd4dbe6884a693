//! Command-line parsing: subcommands, options and their values (sizes, durations, lists).
//!
//! Written by hand (a few dozen options do not need a parser crate). Every option takes its value as
//! the next argument or after `=`; an unknown option or a bad value is an error with the option's name,
//! never ignored.

use std::path::PathBuf;
use std::time::Duration;

use crate::pattern::Inject;
use crate::run_one::Job;
use crate::workloads::{self, Params};

/// The usage text.
pub const USAGE: &str = "\
twinheap-stress: compare memory allocators on classic workloads, and soak-test them.

USAGE:
    twinheap-stress compare [OPTIONS]        the comparison suite (quick by default)
    twinheap-stress soak DURATION [OPTIONS]  run workloads in a loop; fail on any fault or crash
    twinheap-stress --soak DURATION [OPTIONS]   (the same)
    twinheap-stress list                     workloads and the allocators found here
    twinheap-stress help

OPTIONS:
    --allocators A,B,...  slab, arena, system, a known peer (jemalloc, mimalloc, tcmalloc,
                          hardened_malloc), a path to a malloc .so, or LABEL=PATH
                          [default: slab, arena, system and every known peer installed]
    --baseline A          the allocator figures are relative to [default: system]
    --workloads W,...     workloads to run, or 'all' [default: all]; see `list`
    --threads N,...       thread counts, each a separate run [default: number of CPUs, at least 2]
    --reps N              repetitions per run; tables show the median [default: 3]
    --scale F             multiplies every workload's iteration count [default: 1]
    --quick               a smaller run: --scale 0.2 --reps 1 (a smoke test)
    --seed N              seed of the first repetition (repetition r uses seed+r) [default: 1]
    --sizes LO-HI         request-size range for workloads that draw from a range (e.g. 16-4k)
    --out DIR             report directory [default: target/stress-report]
    --json FILE           also write the JSON report to FILE
    --csv FILE            also write the CSV table to FILE
    --chart FILE.svg      also write the SVG chart to FILE
    --timeout SECS        kill a run that takes longer [default: 300]
    --strict              compare exits non-zero when any allocator fails a run (by default
                          only a failure of slab, arena or the baseline does; a peer's is reported)

compare writes DIR/report.md, DIR/report.json, DIR/report.csv and DIR/compare.svg.
soak prints one line per round and exits non-zero, naming workload, allocator and seed,
at the first corrupted pattern, child crash (with its signal) or timeout.
";

/// A parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Compare(Options),
    Soak(Options, Duration),
    List,
    Help,
    RunOne(Job),
}

/// Options shared by `compare` and `soak`.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The `--allocators` list as given (resolved later, because it looks at the file system).
    pub allocators: Option<String>,
    pub baseline: String,
    pub workloads: Vec<String>,
    pub threads: Vec<usize>,
    pub reps: usize,
    pub scale: f64,
    pub seed: u64,
    pub sizes: Option<(usize, usize)>,
    pub out_dir: PathBuf,
    pub json: Option<PathBuf>,
    pub csv: Option<PathBuf>,
    pub chart: Option<PathBuf>,
    pub timeout: Duration,
    /// Any failed run, of any allocator, makes `compare` exit non-zero.
    pub strict: bool,
    /// Test hook: inject a fault into every child (`--inject corrupt@N` / `double-free@N`).
    pub inject: Option<(Inject, u64)>,
}

/// The default thread count: the CPUs available, but at least 2 so cross-thread workloads are.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(2)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allocators: None,
            baseline: "system".to_string(),
            workloads: workloads::ALL.iter().map(|w| w.name.to_string()).collect(),
            threads: vec![default_threads()],
            reps: 3,
            scale: 1.0,
            seed: 1,
            sizes: None,
            out_dir: PathBuf::from("target/stress-report"),
            json: None,
            csv: None,
            chart: None,
            timeout: Duration::from_secs(300),
            strict: false,
            inject: None,
        }
    }
}

/// Parses a byte size: digits with an optional binary suffix k, m or g (any case, optional "b"/"ib").
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (digits, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1usize << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("bad size '{s}' (expected e.g. 64, 4k, 2M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Parses `LO-HI` sizes, `1 <= LO <= HI <= 1 GiB`.
pub fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    let (lo, hi) = s
        .split_once('-')
        .ok_or_else(|| format!("bad size range '{s}' (expected LO-HI, e.g. 16-4k)"))?;
    let (lo, hi) = (parse_size(lo)?, parse_size(hi)?);
    if lo == 0 || lo > hi || hi > 1 << 30 {
        return Err(format!("bad size range '{s}': need 1 <= LO <= HI <= 1G"));
    }
    Ok((lo, hi))
}

/// Parses a duration: a number with an optional unit ms, s, m or h (default seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration '{s}' (expected e.g. 30s, 10m, 2h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in '{s}' (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 30.0 * 86400.0 {
        return Err(format!("duration '{s}' out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_inject(s: &str) -> Result<(Inject, u64), String> {
    let (kind, at) = s.split_once('@').unwrap_or((s, "10"));
    let kind = Inject::parse(kind)
        .ok_or_else(|| format!("bad --inject '{s}' (corrupt, double-free or hang)"))?;
    let at = at
        .parse()
        .map_err(|_| format!("bad --inject count in '{s}'"))?;
    Ok((kind, at))
}

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{opt}: bad value '{v}'"))
}

/// Splits `args` into (option name, value) pairs and positionals, knowing which options are flags.
struct Cursor<'a> {
    args: &'a [String],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// The next argument: `Some((name, inline value))` for an option, or a positional in `name`.
    fn next(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let a = self.args.get(self.i)?;
        self.i += 1;
        if let Some(rest) = a.strip_prefix("--") {
            if let Some((n, v)) = rest.split_once('=') {
                return Some((n, Some(v)));
            }
            return Some((rest, None));
        }
        Some((a.as_str(), None))
    }

    fn value(&mut self, name: &str, inline: Option<&'a str>) -> Result<&'a str, String> {
        if let Some(v) = inline {
            return Ok(v);
        }
        let v = self
            .args
            .get(self.i)
            .ok_or_else(|| format!("--{name} needs a value"))?;
        self.i += 1;
        Ok(v)
    }
}

fn is_option(args: &[String], i: usize) -> bool {
    args[i].starts_with("--")
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let Some(first) = args.first() else {
        return Ok(Command::Help);
    };
    match first.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "list" => Ok(Command::List),
        "run-one" => parse_run_one(&args[1..]).map(Command::RunOne),
        "compare" => {
            let (o, soak, pos) = parse_options(&args[1..])?;
            if let Some(p) = pos.first() {
                return Err(format!("compare: unexpected argument '{p}'"));
            }
            Ok(match soak {
                Some(d) => Command::Soak(o, d),
                None => Command::Compare(o),
            })
        }
        "soak" => {
            let (o, soak, pos) = parse_options(&args[1..])?;
            let d = match (soak, pos.as_slice()) {
                (Some(d), []) => d,
                (None, [d]) => parse_duration(d)?,
                (None, []) => return Err("soak needs a DURATION (e.g. soak 10m)".to_string()),
                _ => return Err("soak takes one DURATION".to_string()),
            };
            Ok(Command::Soak(o, d))
        }
        _ if is_option(args, 0) => {
            let (o, soak, pos) = parse_options(args)?;
            if let Some(p) = pos.first() {
                return Err(format!("unexpected argument '{p}'"));
            }
            match soak {
                Some(d) => Ok(Command::Soak(o, d)),
                None => Err("give a command: compare, soak or list (see --help)".to_string()),
            }
        }
        other => Err(format!("unknown command '{other}' (see --help)")),
    }
}

fn parse_options(args: &[String]) -> Result<(Options, Option<Duration>, Vec<String>), String> {
    let mut o = Options::default();
    let mut soak = None;
    let mut positional = Vec::new();
    let mut quick = false;
    let mut reps_given = false;
    let mut scale_given = false;
    let mut c = Cursor { args, i: 0 };
    while let Some((name, inline)) = c.next() {
        if !args[c.i - 1].starts_with("--") {
            positional.push(name.to_string());
            continue;
        }
        match name {
            "allocators" => o.allocators = Some(c.value(name, inline)?.to_string()),
            "baseline" => o.baseline = c.value(name, inline)?.to_string(),
            "workloads" => {
                let v = c.value(name, inline)?;
                if v != "all" {
                    o.workloads = v
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                if let Some(bad) = o.workloads.iter().find(|w| workloads::find(w).is_none()) {
                    return Err(format!(
                        "unknown workload '{bad}'; known: {}",
                        workloads::ALL
                            .iter()
                            .map(|w| w.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                if o.workloads.is_empty() {
                    return Err("--workloads: empty list".to_string());
                }
            }
            "threads" => {
                let v = c.value(name, inline)?;
                o.threads = v
                    .split(',')
                    .map(|t| parse_num::<usize>("--threads", t.trim()))
                    .collect::<Result<_, _>>()?;
                if o.threads.iter().any(|&t| t == 0 || t > 1024) {
                    return Err("--threads: each count must be 1..=1024".to_string());
                }
            }
            "reps" => {
                o.reps = parse_num("--reps", c.value(name, inline)?)?;
                if o.reps == 0 {
                    return Err("--reps must be at least 1".to_string());
                }
                reps_given = true;
            }
            "scale" => {
                o.scale = parse_num("--scale", c.value(name, inline)?)?;
                if !(o.scale > 0.0 && o.scale <= 1000.0) {
                    return Err("--scale must be in (0, 1000]".to_string());
                }
                scale_given = true;
            }
            "quick" => quick = true,
            "strict" => o.strict = true,
            "seed" => o.seed = parse_num("--seed", c.value(name, inline)?)?,
            "sizes" => o.sizes = Some(parse_size_range(c.value(name, inline)?)?),
            "out" => o.out_dir = PathBuf::from(c.value(name, inline)?),
            "json" => o.json = Some(PathBuf::from(c.value(name, inline)?)),
            "csv" => o.csv = Some(PathBuf::from(c.value(name, inline)?)),
            "chart" => o.chart = Some(PathBuf::from(c.value(name, inline)?)),
            "timeout" => {
                o.timeout =
                    Duration::from_secs(parse_num::<u64>("--timeout", c.value(name, inline)?)?)
            }
            "soak" => soak = Some(parse_duration(c.value(name, inline)?)?),
            "inject" => o.inject = Some(parse_inject(c.value(name, inline)?)?),
            _ => return Err(format!("unknown option --{name} (see --help)")),
        }
    }
    if quick {
        if !scale_given {
            o.scale = 0.2;
        }
        if !reps_given {
            o.reps = 1;
        }
    }
    Ok((o, soak, positional))
}

fn parse_run_one(args: &[String]) -> Result<Job, String> {
    let mut job = Job {
        workload: String::new(),
        params: Params {
            threads: 2,
            scale: 1.0,
            seed: 1,
            sizes: None,
        },
        inject: None,
    };
    let mut c = Cursor { args, i: 0 };
    while let Some((name, inline)) = c.next() {
        match name {
            "workload" => job.workload = c.value(name, inline)?.to_string(),
            "threads" => job.params.threads = parse_num("--threads", c.value(name, inline)?)?,
            "scale" => job.params.scale = parse_num("--scale", c.value(name, inline)?)?,
            "seed" => job.params.seed = parse_num("--seed", c.value(name, inline)?)?,
            "sizes" => job.params.sizes = Some(parse_size_range(c.value(name, inline)?)?),
            "inject" => job.inject = Some(parse_inject(c.value(name, inline)?)?),
            _ => return Err(format!("run-one: unknown argument '{name}'")),
        }
    }
    if workloads::find(&job.workload).is_none() {
        return Err(format!("run-one: unknown workload '{}'", job.workload));
    }
    if job.params.threads == 0 || job.params.scale.is_nan() || job.params.scale <= 0.0 {
        return Err("run-one: threads and scale must be positive".to_string());
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn sizes_and_ranges() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("3kb"), Ok(3072));
        assert!(parse_size("x").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(parse_size_range("16-4k"), Ok((16, 4096)));
        assert!(parse_size_range("4k-16").is_err());
        assert!(parse_size_range("0-16").is_err());
        assert!(parse_size_range("16").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn compare_defaults_and_options() {
        let Command::Compare(o) = parse(&args("compare")).unwrap() else {
            panic!()
        };
        assert_eq!(o, Options::default());
        assert_eq!(o.reps, 3);
        assert_eq!(o.workloads.len(), workloads::ALL.len());
        assert!(o.threads[0] >= 2);

        let Command::Compare(o) = parse(&args(
            "compare --allocators slab,system --workloads larson,aligned --threads 1,4 --reps=5 \
             --seed 7 --sizes 8-1k --out /tmp/x --json a.json --csv=b.csv --chart c.svg --timeout 9 \
             --baseline slab --strict",
        ))
        .unwrap() else {
            panic!()
        };
        assert_eq!(o.allocators.as_deref(), Some("slab,system"));
        assert_eq!(o.workloads, vec!["larson", "aligned"]);
        assert_eq!(o.threads, vec![1, 4]);
        assert_eq!(o.reps, 5);
        assert_eq!(o.seed, 7);
        assert_eq!(o.sizes, Some((8, 1024)));
        assert_eq!(o.out_dir, PathBuf::from("/tmp/x"));
        assert_eq!(o.json, Some(PathBuf::from("a.json")));
        assert_eq!(o.csv, Some(PathBuf::from("b.csv")));
        assert_eq!(o.chart, Some(PathBuf::from("c.svg")));
        assert_eq!(o.timeout, Duration::from_secs(9));
        assert_eq!(o.baseline, "slab");
        assert!(o.strict);
    }

    #[test]
    fn quick_sets_scale_and_reps_unless_given() {
        let Command::Compare(o) = parse(&args("compare --quick")).unwrap() else {
            panic!()
        };
        assert_eq!((o.scale, o.reps), (0.2, 1));
        let Command::Compare(o) = parse(&args("compare --quick --reps 2 --scale 0.5")).unwrap()
        else {
            panic!()
        };
        assert_eq!((o.scale, o.reps), (0.5, 2));
    }

    #[test]
    fn soak_forms() {
        for a in [
            "soak 10m",
            "--soak 10m",
            "compare --soak 10m",
            "soak --soak=10m",
        ] {
            match parse(&args(a)).unwrap() {
                Command::Soak(_, d) => assert_eq!(d, Duration::from_secs(600), "{a}"),
                c => panic!("{a}: {c:?}"),
            }
        }
        assert!(parse(&args("soak")).is_err());
        assert!(parse(&args("soak 1m 2m")).is_err());
    }

    #[test]
    fn errors_name_the_problem() {
        let e = |s: &str| parse(&args(s)).unwrap_err();
        assert!(e("compare --bogus").contains("--bogus"));
        assert!(e("compare --reps").contains("--reps needs a value"));
        assert!(e("compare --reps 0").contains("at least 1"));
        assert!(e("compare --reps x").contains("bad value 'x'"));
        assert!(e("compare --workloads nope").contains("unknown workload 'nope'"));
        assert!(e("compare --threads 0").contains("1..=1024"));
        assert!(e("compare extra").contains("unexpected argument 'extra'"));
        assert!(e("frobnicate").contains("unknown command"));
        assert!(e("--reps 2").contains("give a command"));
        assert!(e("compare --inject boom").contains("--inject"));
        assert_eq!(parse(&[]).unwrap(), Command::Help);
        assert_eq!(parse(&args("list")).unwrap(), Command::List);
    }

    #[test]
    fn run_one_round_trips_through_job_args() {
        let job = Job {
            workload: "mixed-small".into(),
            params: Params {
                threads: 3,
                scale: 0.5,
                seed: 11,
                sizes: Some((16, 64)),
            },
            inject: Some((Inject::DoubleFree, 3)),
        };
        match parse(&job.to_args()).unwrap() {
            Command::RunOne(j) => assert_eq!(j, job),
            c => panic!("{c:?}"),
        }
        assert!(parse(&args("run-one --workload nope")).is_err());
        assert!(parse(&args("run-one --workload larson --threads 0")).is_err());
    }
}
