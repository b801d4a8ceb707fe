//! The house rules that a reading of `src/` can check, as rust-analyzer's tidy tests do:
//! no circle of imports between modules, and the crates that reach the outside world (actix-web,
//! diesel, reqwest) and the system clock (`Utc::now`) appear only where ARCHITECTURE.md says.
//! A new use elsewhere fails here, with the file and line, until the map says otherwise.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every source file of the library, by its module path (`server::audit`); `crate` is lib.rs.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter(|f| f != &src.join("main.rs"))
        .map(|f| {
            let relative = f.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> =
                relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            let name = if parts.is_empty() { "crate".to_owned() } else { parts.join("::") };
            (name, f)
        })
        .collect()
}

/// A file's code without comments and without its unit tests (`#[cfg(test)] mod tests`).
fn code(path: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let line = line.split(" // ").next().unwrap_or(line);
        lines.push((i + 1, line.to_owned()));
    }
    lines
}

/// The modules a file's code names: `crate::a::b`, `super::x`, `super::{..}` (its parent),
/// resolved to the deepest module that exists.
fn imports(module: &str, path: &Path, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
    let own: Vec<&str> = if module == "crate" { vec![] } else { module.split("::").collect() };
    // A file `x/mod.rs` or `x.rs` is module x; its `super` is x's parent.
    let is_root_file = path.file_name().is_some_and(|n| n == "lib.rs");
    let path_re = regex::Regex::new(r"\b(crate|super)((?:::(?:super|[a-z_][a-z0-9_]*))*)(::\{)?").unwrap();
    let mut found = BTreeSet::new();
    for (_, line) in code(path) {
        for m in path_re.captures_iter(&line) {
            let mut segments: Vec<String> = match &m[1] {
                "crate" => vec![],
                _ if is_root_file => continue,
                _ => own[..own.len().saturating_sub(1)].iter().map(|s| s.to_string()).collect(),
            };
            for part in m[2].split("::").filter(|p| !p.is_empty()) {
                if part == "super" {
                    segments.pop();
                } else {
                    segments.push(part.to_owned());
                }
            }
            // The deepest prefix that is a module.
            while !segments.is_empty() && !known.contains_key(&segments.join("::")) {
                segments.pop();
            }
            let target = if segments.is_empty() { "crate".to_owned() } else { segments.join("::") };
            if target != module {
                found.insert(target);
            }
        }
    }
    found
}

fn ancestors(module: &str) -> Vec<String> {
    let parts: Vec<&str> = module.split("::").collect();
    (1..parts.len()).map(|n| parts[..n].join("::")).collect()
}

/// Circles of imports between modules that are not one inside the other: each edge is lifted
/// to the two siblings under the modules' common ancestor, and those must form no circle.
#[test]
fn no_module_level_import_circles() {
    let known = modules();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut why: BTreeMap<(String, String), String> = BTreeMap::new();
    for (module, path) in &known {
        if module == "crate" {
            continue;
        }
        for target in imports(module, path, &known) {
            if target == "crate" || ancestors(module).contains(&target) || ancestors(&target).contains(module)
            {
                continue;
            }
            let (a, b): (Vec<&str>, Vec<&str>) = (module.split("::").collect(), target.split("::").collect());
            let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
            let from = a[..=common].join("::");
            let to = b[..=common].join("::");
            why.entry((from.clone(), to.clone())).or_insert_with(|| format!("{module} names {target}"));
            edges.entry(from).or_default().insert(to);
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(node.to_owned());
        None
    }
    // Every circle found from every start (one per start at most), all reported at once.
    let mut circles = BTreeSet::new();
    for node in edges.keys() {
        if let Some(circle) = visit(node, &edges, &mut Vec::new(), &mut BTreeSet::new()) {
            let reasons: Vec<&String> =
                circle.windows(2).map(|w| &why[&(w[0].clone(), w[1].clone())]).collect();
            circles.insert(format!("{} ({reasons:?})", circle.join(" -> ")));
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.into_iter().collect::<Vec<_>>().join("\n"));
}

/// Where each crate that reaches the outside world, and the system clock, may be named: the
/// layering ARCHITECTURE.md documents.
#[test]
fn the_outside_world_is_reached_only_where_the_map_says() {
    let rules: [(&str, &str, &[&str]); 4] = [
        // The HTTP layer: the server, the client's actix integration, and the command that
        // serves the local dashboard.
        ("actix_web", r"\bactix_web\b", &["server", "client::actix", "cli::telemetry"]),
        // The databases: the server's store and the deployment's local store.
        ("diesel", r"\bdiesel\b", &["store", "client::store"]),
        // Outbound HTTP: the client's check-ins, the commands that call a server, and webhooks.
        ("reqwest", r"\breqwest\b", &["client", "cli", "server::webhooks"]),
        // The system clock, read at the entry points only; everything else is handed `now` or a
        // `Clock`. Commands a person runs read it as they start; the client's default clock,
        // its choice file and its session handles read it where no clock is handed in.
        (
            "Utc::now",
            r"\bUtc::now\b",
            &[
                "time",
                "cli",
                "client::config",
                "client::choice",
                "client::telemetry",
                "client::actix",
                "store::db",
                "store::bench",
                "server::audit",
            ],
        ),
    ];
    let mut broken = Vec::new();
    for (module, path) in modules() {
        for (name, pattern, allowed) in rules {
            let re = regex::Regex::new(pattern).unwrap();
            let inside = allowed.iter().any(|a| module == *a || module.starts_with(&format!("{a}::")));
            if inside {
                continue;
            }
            for (line, text) in code(&path) {
                if re.is_match(&text) {
                    broken.push(format!("{}:{line}: {name} outside {allowed:?}", path.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
