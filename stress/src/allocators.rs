//! Which allocators a run compares, and how a child is set up to use each.
//!
//! `slab`, `arena` and `system` are built into the binary: its global allocator is
//! `twinheap::Select`, and the child gets `TWINHEAP=<name>`. Any other allocator is a malloc shared
//! object, preloaded into the child (`LD_PRELOAD`) with `TWINHEAP=system`, so that Select forwards to
//! the preloaded `malloc`. A peer is named by a path to its `.so` (`label=path` to choose the label),
//! or by a known name (jemalloc, mimalloc, tcmalloc, hardened_malloc) that is looked up in the usual
//! library directories; a missing one is an error that says what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The allocators built into the binary, selected with `TWINHEAP`.
pub const BUILTIN: [&str; 3] = ["slab", "arena", "system"];

/// How a child runs on an allocator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One of [`BUILTIN`]; the value of `TWINHEAP`.
    Builtin(&'static str),
    /// A shared object for `LD_PRELOAD` (canonical path).
    Preload(PathBuf),
}

/// An allocator to measure, with the label reports use for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocator {
    pub label: String,
    pub kind: Kind,
}

impl Allocator {
    /// The `TWINHEAP` value and the `LD_PRELOAD` value (if any) for the child.
    pub fn child_env(&self) -> (&'static str, Option<&Path>) {
        match &self.kind {
            Kind::Builtin(name) => (name, None),
            Kind::Preload(path) => ("system", Some(path)),
        }
    }

    /// Where it comes from, for reports: "built in" or the library path and package version.
    pub fn origin(&self) -> String {
        match &self.kind {
            Kind::Builtin("system") => format!("built in (libc malloc, {})", libc_version()),
            Kind::Builtin(_) => "built in (twinheap)".to_string(),
            Kind::Preload(path) => match package_version(path) {
                Some(v) => format!("{} ({v})", path.display()),
                None => path.display().to_string(),
            },
        }
    }
}

/// A peer allocator the tool knows how to find.
struct Known {
    name: &'static str,
    files: &'static [&'static str],
    install: &'static str,
}

const KNOWN: &[Known] = &[
    Known {
        name: "jemalloc",
        files: &["libjemalloc.so.2", "libjemalloc.so"],
        install: "apt-get install libjemalloc2",
    },
    Known {
        name: "mimalloc",
        files: &["libmimalloc.so.2", "libmimalloc.so"],
        install: "apt-get install libmimalloc2.0",
    },
    Known {
        name: "tcmalloc",
        files: &[
            "libtcmalloc_minimal.so.4",
            "libtcmalloc.so.4",
            "libtcmalloc_minimal.so",
            "libtcmalloc.so",
        ],
        install: "apt-get install libtcmalloc-minimal4",
    },
    Known {
        name: "hardened_malloc",
        files: &["libhardened_malloc.so", "libhardened_malloc-light.so"],
        install: "build it from GrapheneOS's hardened_malloc sources and pass the path to its .so",
    },
];

/// The names of the peers the tool can find by name.
pub fn known_names() -> Vec<&'static str> {
    KNOWN.iter().map(|k| k.name).collect()
}

/// The directories searched for a known peer, most specific first.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in ["/usr/lib", "/lib", "/usr/local/lib"] {
        if let Ok(entries) = std::fs::read_dir(root) {
            let mut multiarch: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                            n.starts_with(std::env::consts::ARCH) && n.contains("-linux-")
                        })
                })
                .collect();
            multiarch.sort();
            dirs.extend(multiarch);
        }
    }
    for d in ["/usr/lib64", "/usr/lib", "/lib64", "/lib", "/usr/local/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

fn find_known(k: &Known) -> Option<PathBuf> {
    let dirs = library_dirs();
    k.files
        .iter()
        .flat_map(|f| dirs.iter().map(move |d| d.join(f)))
        .find(|p| p.is_file())
        .map(|p| p.canonicalize().unwrap_or(p))
}

/// The known peers installed on this machine.
pub fn installed_peers() -> Vec<Allocator> {
    KNOWN
        .iter()
        .filter_map(|k| {
            find_known(k).map(|p| Allocator {
                label: k.name.to_string(),
                kind: Kind::Preload(p),
            })
        })
        .collect()
}

/// A label for a library path: `/x/libjemalloc.so.2` is `jemalloc`.
pub fn label_for_path(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("preload");
    let name = name.strip_prefix("lib").unwrap_or(name);
    let name = name.split(".so").next().unwrap_or(name);
    if name.is_empty() {
        "preload".to_string()
    } else {
        name.to_string()
    }
}

/// Resolves one `--allocators` entry.
pub fn resolve(spec: &str) -> Result<Allocator, String> {
    let spec = spec.trim();
    let (label, target) = match spec.split_once('=') {
        Some((l, t)) if !l.is_empty() && !t.is_empty() => (Some(l.to_string()), t),
        Some(_) => return Err(format!("allocator '{spec}': expected label=path")),
        None => (None, spec),
    };
    if label.is_none() {
        if let Some(b) = BUILTIN.iter().find(|b| **b == target) {
            return Ok(Allocator {
                label: b.to_string(),
                kind: Kind::Builtin(b),
            });
        }
        if let Some(k) = KNOWN.iter().find(|k| k.name == target) {
            return match find_known(k) {
                Some(p) => Ok(Allocator {
                    label: k.name.to_string(),
                    kind: Kind::Preload(p),
                }),
                None => Err(format!(
                    "allocator '{}' is not installed here (looked for {} in {}); to measure it: {}",
                    k.name,
                    k.files.join(", "),
                    library_dirs()
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    k.install
                )),
            };
        }
    }
    if label.is_some() || target.contains('/') || target.contains(".so") {
        let path = Path::new(target);
        if !path.is_file() {
            return Err(format!(
                "allocator '{spec}': no such library file {}",
                path.display()
            ));
        }
        let path = path.canonicalize().map_err(|e| format!("{target}: {e}"))?;
        return Ok(Allocator {
            label: label.unwrap_or_else(|| label_for_path(&path)),
            kind: Kind::Preload(path),
        });
    }
    Err(format!(
        "unknown allocator '{spec}': use one of {}, a known peer ({}), or a path to a malloc .so",
        BUILTIN.join(", "),
        known_names().join(", ")
    ))
}

/// Resolves a comma-separated list, rejecting duplicate labels.
pub fn resolve_list(list: &str) -> Result<Vec<Allocator>, String> {
    let mut out: Vec<Allocator> = Vec::new();
    for spec in list.split(',').filter(|s| !s.trim().is_empty()) {
        let a = resolve(spec)?;
        if out.iter().any(|o| o.label == a.label) {
            return Err(format!("allocator label '{}' given twice", a.label));
        }
        out.push(a);
    }
    if out.is_empty() {
        return Err("no allocators given".to_string());
    }
    Ok(out)
}

/// The default set: the three built-ins and every known peer installed here.
pub fn default_set() -> Vec<Allocator> {
    let mut v: Vec<Allocator> = BUILTIN
        .iter()
        .map(|b| Allocator {
            label: b.to_string(),
            kind: Kind::Builtin(b),
        })
        .collect();
    v.extend(installed_peers());
    v
}

/// The Debian package and version that own `path`, if dpkg knows it.
fn package_version(path: &Path) -> Option<String> {
    let out = Command::new("dpkg-query")
        .arg("-S")
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let pkg = text.lines().next()?.split(':').next()?.trim().to_string();
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", &pkg])
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !version.is_empty()).then(|| format!("{pkg} {version}"))
}

/// The C library's version string ("glibc 2.36").
#[cfg(target_env = "gnu")]
pub fn libc_version() -> String {
    extern "C" {
        fn gnu_get_libc_version() -> *const libc::c_char;
    }
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let v = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    format!("glibc {}", v.to_string_lossy())
}

/// The C library's name where it has no version call.
#[cfg(not(target_env = "gnu"))]
pub fn libc_version() -> String {
    "the C library".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_resolve_to_twinheap_values() {
        for b in BUILTIN {
            let a = resolve(b).unwrap();
            assert_eq!(a.label, b);
            assert_eq!(a.child_env(), (b, None));
        }
    }

    #[test]
    fn paths_and_labels() {
        assert_eq!(
            label_for_path(Path::new("/usr/lib/libjemalloc.so.2")),
            "jemalloc"
        );
        assert_eq!(
            label_for_path(Path::new("/x/libtcmalloc_minimal.so.4.5")),
            "tcmalloc_minimal"
        );
        assert_eq!(label_for_path(Path::new("/x/hm.so")), "hm");
        let libc_path = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter_map(|l| l.split_ascii_whitespace().nth(5))
            .find(|p| p.contains("libc.so"))
            .unwrap()
            .to_string();
        let a = resolve(&format!("mine={libc_path}")).unwrap();
        assert_eq!(a.label, "mine");
        let (twinheap, preload) = a.child_env();
        assert_eq!(twinheap, "system");
        assert!(preload.unwrap().is_absolute());
    }

    #[test]
    fn missing_and_unknown_are_clear_errors() {
        let e = resolve("/nonexistent/libfoo.so").unwrap_err();
        assert!(e.contains("no such library file"), "{e}");
        let e = resolve("nosuchalloc").unwrap_err();
        assert!(
            e.contains("unknown allocator 'nosuchalloc'") && e.contains("jemalloc"),
            "{e}"
        );
        let e = resolve("=x").unwrap_err();
        assert!(e.contains("label=path"), "{e}");
        // hardened_malloc has no Debian package; unless someone installed it, the error says how.
        if let Err(e) = resolve("hardened_malloc") {
            assert!(
                e.contains("not installed") && e.contains("libhardened_malloc.so"),
                "{e}"
            );
        }
    }

    #[test]
    fn lists_reject_duplicates_and_empty() {
        assert_eq!(resolve_list("slab, system").unwrap().len(), 2);
        assert!(resolve_list("slab,slab").unwrap_err().contains("twice"));
        assert!(resolve_list(" , ").is_err());
        let d = default_set();
        assert_eq!(
            &d.iter()
                .take(3)
                .map(|a| a.label.as_str())
                .collect::<Vec<_>>(),
            &BUILTIN
        );
    }

    #[test]
    #[cfg(target_env = "gnu")]
    fn libc_version_is_named() {
        assert!(libc_version().starts_with("glibc 2."));
    }
}
