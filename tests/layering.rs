//! The layering the compiler cannot see: no import cycle between the modules of any crate.
//!
//! Crate boundaries are checked by Cargo (a crate cannot name a crate it does not depend on) and by
//! `tests/run` (`cargo tree`). Inside a crate, this test reads every source file's `crate::` and
//! `super::` paths, resolves each to the module file it names, and fails on any cycle. A parent's
//! `mod` and `pub use` of its own children are its public face, not an import, so edges from a
//! module to its own submodules are not counted; unit-test modules are not counted either.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside one crate, e.g. ["store", "money"]; the crate root is [].
type ModPath = Vec<String>;

fn module_path(src: &Path, file: &Path) -> ModPath {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a source file: without its unit-test modules (they sit at the end of a file, after
/// `#[cfg(test)]`) and without comments (a doc link to a module is not an import of it).
fn code_of(text: &str) -> String {
    let code = text.find("#[cfg(test)]").map_or(text, |i| &text[..i]);
    code.lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

fn identifier_at(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// Every path that follows `prefix` (`crate::` or `super::`), brace groups expanded to their
/// first segments: `crate::{a::B, c}` gives [a, B] and [c].
fn paths_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let close = group.find('}').unwrap_or(group.len());
            for item in group[..close].split(',') {
                paths.push(segments(item.trim()));
            }
        } else {
            paths.push(segments(rest));
        }
    }
    paths
}

fn segments(mut text: &str) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let (ident, after) = identifier_at(text);
        if ident.is_empty() {
            break;
        }
        out.push(ident.to_string());
        match after.strip_prefix("::") {
            Some(next) => text = next,
            None => break,
        }
    }
    out
}

/// The module a path names: its longest prefix that is a module of the crate.
fn resolve(modules: &BTreeSet<ModPath>, path: &[String]) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
        .unwrap_or_default()
}

fn import_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<ModPath> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|f| module_path(src, f))
        .collect();
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for file in &files {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let me = module_path(src, file);
        // `super::` names the parent module (for a mod.rs too: its module is the directory's).
        let parent: ModPath = me[..me.len().saturating_sub(1)].to_vec();
        let text = code_of(&std::fs::read_to_string(file).unwrap());
        let text = text.as_str();
        let mut targets = BTreeSet::new();
        for path in paths_after(text, "crate::") {
            targets.insert(resolve(&modules, &path));
        }
        for path in paths_after(text, "super::") {
            let absolute: Vec<String> = parent.iter().cloned().chain(path).collect();
            targets.insert(resolve(&modules, &absolute));
        }
        let own_children = |t: &ModPath| t.len() > me.len() && t.starts_with(&me);
        targets.retain(|t| *t != me && !own_children(t));
        graph.entry(me).or_default().extend(targets);
    }
    graph
}

/// One cycle in the graph, if there is any (depth-first search with colours).
fn find_cycle(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Option<Vec<ModPath>> {
    fn visit(
        node: &ModPath,
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        stack: &mut Vec<ModPath>,
        done: &mut BTreeSet<ModPath>,
    ) -> Option<Vec<ModPath>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.clone());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn show(path: &ModPath) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut sources = vec![root.join("src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        sources.push(entry.unwrap().path().join("src"));
    }
    let mut checked = 0;
    for src in sources {
        let graph = import_graph(&src);
        checked += graph.len();
        if let Some(cycle) = find_cycle(&graph) {
            let cycle: Vec<String> = cycle.iter().map(show).collect();
            panic!("import cycle in {}: {}", src.display(), cycle.join(" -> "));
        }
    }
    assert!(checked > 50, "only {checked} modules were read");
}

#[test]
fn the_checker_sees_a_cycle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::Thing;\npub struct Other;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.rs"),
        "use super::{a::Other};\npub struct Thing;\n#[cfg(test)]\nmod tests { use crate::lib; }\n",
    )
    .unwrap();
    let cycle = find_cycle(&import_graph(src)).expect("a <-> b is a cycle");
    assert!(cycle.contains(&vec!["a".to_string()]) && cycle.contains(&vec!["b".to_string()]));
    // A doc link back to `a` is not an import of it.
    std::fs::write(
        src.join("b.rs"),
        "/// Made for [`crate::a::Other`].\npub struct Thing;\n",
    )
    .unwrap();
    assert_eq!(find_cycle(&import_graph(src)), None);
}
