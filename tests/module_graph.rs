//! The crate's top-level modules import each other without a cycle: no module imports one
//! that imports it back, directly or through others. A module is a file or directory under
//! `src/`; it depends on every `crate::<module>` it names outside comments (its tests
//! included). Checked by reading the sources, so a cycle fails here before a reader meets it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules it names.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let top = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .expect("utf-8 path")
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            let named = deps.entry(top.clone()).or_default();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != top {
                        named.insert(name);
                    }
                }
            }
        }
    }
    // Only modules of this crate (a name that is not one is a path into a dependency).
    let modules: BTreeSet<String> = deps.keys().cloned().collect();
    for named in deps.values_mut() {
        named.retain(|m| modules.contains(m));
    }
    deps
}

/// A cycle through `start`, as the path of modules, if there is one.
fn cycle_from(deps: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut path = vec![start.to_string()];
    let mut seen = BTreeSet::new();
    fn walk(
        deps: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let here = path.last().expect("non-empty path").clone();
        for next in &deps[&here] {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(deps, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    walk(deps, start, &mut path, &mut seen).then_some(path)
}

#[test]
fn no_top_level_module_imports_one_that_imports_it_back() {
    let deps = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(deps.len() > 20, "read the modules: {deps:?}");
    // The graph, for a reader (`cargo test --test module_graph -- --nocapture`).
    for (module, named) in &deps {
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        eprintln!("{module} -> {}", named.join(", "));
    }
    let cycles: Vec<String> = deps
        .keys()
        .filter_map(|m| cycle_from(&deps, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_checker_finds_a_cycle() {
    let deps: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, n)| (m.to_string(), n.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycle_from(&deps, "a").unwrap(), ["a", "b", "c", "a"]);
    assert!(cycle_from(&deps, "d").is_none());
}
