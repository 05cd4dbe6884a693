//! twinheap-stress: compares memory allocators on classic workload shapes and soak-tests them.
//!
//! The binary's own global allocator is `twinheap::Select`, so the allocator under test is chosen per
//! process by `TWINHEAP` (slab, arena, system) and, with `TWINHEAP=system`, by `LD_PRELOAD` of any
//! malloc `.so`. The parent (`compare`, `soak`) only orchestrates: each measurement is a child
//! re-executing this binary as `run-one` (see [`run_one`] and [`launch`]). docs/benchmarks.md has the
//! user's guide.

mod allocators;
mod cli;
mod compare;
mod fault;
mod launch;
mod machine;
mod pattern;
mod progress;
mod report;
mod rng;
mod rss;
mod run_one;
mod soak;
mod stats;
mod workloads;

#[global_allocator]
static ALLOC: twinheap::Select = twinheap::Select;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match cli::parse(&args) {
        Ok(cmd) => run(cmd, &args),
        Err(e) => {
            eprintln!("twinheap-stress: {e}");
            2
        }
    };
    std::process::exit(code);
}

fn run(cmd: cli::Command, args: &[String]) -> i32 {
    let command = format!("twinheap-stress {}", args.join(" "))
        .trim_end()
        .to_string();
    match cmd {
        cli::Command::Help => {
            print!("{}", cli::USAGE);
            0
        }
        cli::Command::List => {
            list();
            0
        }
        cli::Command::RunOne(job) => run_one::run(&job),
        cli::Command::Compare(o) => compare::run(&o, &command),
        cli::Command::Soak(o, d) => soak::run(&o, d),
    }
}

fn list() {
    println!("Workloads:");
    for w in workloads::ALL {
        println!(
            "  {:<14} {}\n  {:<14} (follows {})",
            w.name, w.summary, "", w.follows
        );
    }
    println!("\nAllocators:");
    for b in allocators::BUILTIN {
        println!("  {b:<16} built in (TWINHEAP={b})");
    }
    for name in allocators::known_names() {
        match allocators::resolve(name) {
            Ok(a) => println!("  {name:<16} {}", a.origin()),
            Err(_) => println!("  {name:<16} not installed"),
        }
    }
    println!("  <path to .so>    any malloc shared object, preloaded (LABEL=PATH to name it)");
}
