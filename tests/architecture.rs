//! The module graph of `src/` has no cycle: each file depends only on files below it, so each
//! can be read (and changed) knowing only what it uses.
//!
//! An edge `a -> b` is a `crate::b` path in the code of `src/a.rs` (comments, doc comments and
//! string literals do not count; `use crate::{b, c}` groups do).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The source with comments, string and character literals blanked out.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match chars.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    Some(_) => j += 1,
                }
            }
            i = j;
            out.push(' ');
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push(' ');
        } else {
            // Anything else, lifetimes included.
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The first path segment of every item of a `{ ... }` group starting at `code[open]`.
fn group_heads(code: &str, open: usize) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expecting_head = true;
    let mut current = String::new();
    for c in code[open..].chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    expecting_head = false;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => expecting_head = true,
            c if depth == 1 && expecting_head && is_ident(c) => current.push(c),
            _ if depth == 1 && expecting_head && !current.is_empty() => {
                heads.push(std::mem::take(&mut current));
                expecting_head = false;
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        heads.push(current);
    }
    heads
}

/// The modules that `code` names as `crate::<module>`, among `modules`.
fn references(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let start = from + at;
        from = start + "crate::".len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue; // e.g. `my_crate::`
        }
        let rest = &code[from..];
        let names = if rest.starts_with('{') {
            group_heads(code, from)
        } else {
            vec![rest.chars().take_while(|&c| is_ident(c)).collect()]
        };
        found.extend(names.into_iter().filter(|name| modules.contains(name)));
    }
    found
}

/// `module -> the modules it references`, for the given `(module, source)` pairs.
fn graph(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, source)| {
            let mut uses = references(&code_only(source), &modules);
            uses.remove(module);
            (module.clone(), uses)
        })
        .collect()
}

/// A cycle of the graph, as the path around it (`a -> b -> a`), if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Unseen,
        OnPath,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, State>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), State::OnPath);
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(State::Unseen) {
                State::OnPath => {
                    let begin = path.iter().position(|n| n == next).unwrap();
                    let mut cycle = path[begin..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                State::Unseen => {
                    if let Some(cycle) = visit(next, graph, state, path) {
                        return Some(cycle);
                    }
                }
                State::Done => {}
            }
        }
        path.pop();
        state.insert(node.to_owned(), State::Done);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node).copied().unwrap_or(State::Unseen) == State::Unseen {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn crate_sources() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            let module = path.file_stem().unwrap().to_string_lossy().into_owned();
            // The crate root re-exports everything and is no module of its own.
            if module != "lib" {
                sources.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    assert!(
        sources.len() > 10,
        "read {} files from {src:?}",
        sources.len()
    );
    sources
}

#[test]
fn the_modules_of_src_import_each_other_without_a_cycle() {
    let graph = graph(&crate_sources());
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "src/ has an import cycle: {}; the graph: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_graph_sees_the_real_dependencies() {
    let graph = graph(&crate_sources());
    // A few edges that must be there, so that a parser finding nothing cannot pass.
    for (from, to) in [
        ("postgres", "pool"),
        ("pool", "migrations"),
        ("protect", "key_ring"),
        ("key_ring", "envelope"),
    ] {
        assert!(
            graph[from].contains(to),
            "{from} -> {to} missing: {graph:#?}"
        );
    }
    // The decorator knows no backend.
    for backend in ["postgres", "memory", "backend"] {
        assert!(!graph["protect"].contains(backend), "protect -> {backend}");
    }
}

#[test]
fn a_cycle_is_found_and_named() {
    let sources: BTreeMap<String, String> = [
        (
            "a",
            "use crate::{b::{X, Y}, c};\n// crate::d in a comment\n",
        ),
        ("b", "fn f() { crate::c::g(); let s = \"crate::d\"; }"),
        (
            "c",
            "/// [`a`](crate::d)\nuse crate::d::Z;\nconst C: char = '\"';",
        ),
        ("d", "fn h() -> u32 { crate::a::K }"),
        ("e", "use my_crate::a; use crate::e::Own;"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_owned(), s.to_owned()))
    .collect();
    let graph = graph(&sources);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_owned(), "c".to_owned()]));
    assert_eq!(graph["b"], BTreeSet::from(["c".to_owned()]));
    assert_eq!(graph["c"], BTreeSet::from(["d".to_owned()]));
    assert!(graph["e"].is_empty());
    let cycle = find_cycle(&graph).unwrap();
    assert_eq!(cycle.join(" -> "), "a -> b -> c -> d -> a");
}

/// The names a `lib.rs` puts at the crate root: every item of its `pub use`s (groups
/// included) and every `pub mod`, `pub struct`, ... it declares itself (feature-gated ones
/// included), comments left out.
fn root_names(lib: &str) -> BTreeSet<String> {
    let code = code_only(lib);
    let mut names = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("pub ") {
        let ident_before = rest[..at].chars().next_back().is_some_and(is_ident);
        let after = &rest[at + "pub ".len()..];
        rest = after;
        if ident_before {
            continue;
        }
        if let Some(path) = after.strip_prefix("use ") {
            let path = &path[..path.find(';').unwrap()];
            let items = match (path.find('{'), path.rfind('}')) {
                (Some(open), Some(close)) => path[open + 1..close].split(',').collect(),
                _ => vec![path],
            };
            for item in items.into_iter().map(str::trim).filter(|i| !i.is_empty()) {
                let name = item.rsplit(" as ").next().unwrap();
                names.insert(name.rsplit("::").next().unwrap().trim().to_owned());
            }
        } else {
            for keyword in [
                "mod ", "struct ", "enum ", "fn ", "const ", "trait ", "type ",
            ] {
                if let Some(item) = after.strip_prefix(keyword) {
                    names.insert(item.chars().take_while(|&c| is_ident(c)).collect());
                }
            }
        }
    }
    names
}

/// The crate root is what a reader takes in at once: at most 25 names (issue 28), these.
/// A name added here is a decision, not an accident: add it to the list, or put it in a
/// module (`error`, `protect`) or on its type as an associated item.
#[test]
fn the_crate_root_holds_at_most_25_names() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let names = root_names(&lib);
    let expected: BTreeSet<String> = [
        "CleanupJob",
        "CleanupOptions",
        "CleanupStats",
        "ConsumePolicy",
        "Consumption",
        "ExpiredRequestCleaner",
        "Lookup",
        "MemoryStore",
        "PostgresStore",
        "PostgresStoreOptions",
        "ProtectedStore",
        "PushedAuthorizationRequest",
        "PushedAuthorizationRequestStore",
        "PushedAuthorizationRequestStoreExt",
        "ReferenceValue",
        "StoreError",
        "TargetSessionAttrs",
        "chrono",
        "error",
        "metrics",
        "oauth_as",
        "prelude",
        "protect",
        "sqlx",
        "uuid",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
    assert!(names.len() <= 25, "{} names: {names:?}", names.len());
}

#[test]
fn root_names_are_read_from_groups_renames_and_declarations() {
    let lib = "// pub use hidden::InComment;\n\
               pub use a::{B, c::D as E, F};\npub use g::H;\n\
               #[cfg(feature = \"x\")]\npub mod m;\nmod private;\npub(crate) use z::Y;\n\
               pub const K: u8 = 1;\nfn f() { let s = \"pub use s::S;\"; }";
    let names: Vec<String> = root_names(lib).into_iter().collect();
    assert_eq!(names, ["B", "E", "F", "H", "K", "m"]);
}
