//! No import cycle between the top-level modules of the OTA crates.
//!
//! A cycle (history ↔ release ↔ state in the core, config ↔ runner here,
//! both broken once) makes a module impossible to read, test or move
//! without the others. This reads each crate's sources as text and follows
//! the paths that name another module of the same crate: `crate::m::..`,
//! `crate::{m::.., Name}` (a name the crate root re-exports counts as its
//! module's) and `super::` chains that climb to the crate root. Code under
//! `#[cfg(test)]` is left out: tests may import what they like.
//!
//! Here rather than in `nusa-ota-core`, whose `clippy.toml` bans `std::fs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crates checked, as folders beside this one.
const CRATES: [&str; 5] = ["ota-core", "ota", "ota-tuf", "ota-slots", "ota-publish"];

#[test]
fn the_ota_crates_have_no_module_cycles() {
    let gateway = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = String::new();
    for name in CRATES {
        let src = gateway.join(name).join("src");
        let read = |rel: &str| std::fs::read_to_string(src.join(rel)).ok();
        let graph = module_graph(&read);
        assert!(
            graph.modules.len() > 1 || name == "ota-publish",
            "{name}: found no modules in {}",
            src.display()
        );
        for cycle in graph.cycles() {
            report.push_str(&format!("{name}: {}\n", graph.describe(&cycle)));
        }
    }
    assert!(report.is_empty(), "module cycles:\n{report}");
}

/// The check itself: a cycle through a re-exported name, one through a
/// `super::` chain, and the same crate without them.
#[test]
fn the_check_finds_a_cycle() {
    let files = |cyclic: bool| {
        let mut f: BTreeMap<&str, String> = BTreeMap::new();
        f.insert(
            "lib.rs",
            "pub mod a;\nmod b;\nmod c;\n#[cfg(test)]\nmod t;\npub use b::Thing;\n".into(),
        );
        f.insert("a.rs", "use crate::Thing;\nmod inner;\n".into());
        f.insert(
            "a/inner.rs",
            if cyclic {
                "use super::super::c::X;\n"
            } else {
                "use super::Y;\n"
            }
            .into(),
        );
        f.insert(
            "b.rs",
            "// crate::a::Nothing in a comment\nconst S: &str = \"crate::a::no\";\n".into(),
        );
        f.insert(
            "c.rs",
            if cyclic {
                "use crate::{a::Y, Thing as T};\n#[cfg(test)]\nmod tests { use crate::b::Z; }\n"
            } else {
                "#[cfg(test)]\nmod tests { use crate::a::Y; }\n"
            }
            .into(),
        );
        f.insert("t.rs", "use crate::c::X;\nuse crate::a::Y;\n".into());
        f
    };
    let acyclic = files(false);
    let graph = module_graph(&|rel: &str| acyclic.get(rel).cloned());
    assert_eq!(
        graph.modules,
        BTreeSet::from(["a", "b", "c"].map(String::from))
    );
    assert!(graph.cycles().is_empty(), "{:?}", graph.edges);

    let cyclic = files(true);
    let graph = module_graph(&|rel: &str| cyclic.get(rel).cloned());
    let cycles = graph.cycles();
    assert_eq!(cycles, [vec!["a".to_string(), "c".to_string()]]);
    let text = graph.describe(&cycles[0]);
    assert!(
        text.contains("a -> c (a/inner.rs: super::super::c)") && text.contains("c -> a"),
        "{text}"
    );
}

/// The top-level modules of one crate and the imports between them.
struct Graph {
    modules: BTreeSet<String>,
    /// (from, to) -> where the first path that makes the edge is.
    edges: BTreeMap<(String, String), String>,
}

impl Graph {
    /// Each set of modules that reach each other (Tarjan's strongly
    /// connected components of more than one module), sorted.
    fn cycles(&self) -> Vec<Vec<String>> {
        struct Tarjan<'g> {
            graph: &'g Graph,
            index: BTreeMap<&'g str, usize>,
            low: BTreeMap<&'g str, usize>,
            stack: Vec<&'g str>,
            found: Vec<Vec<String>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, m: &'g str) {
                let i = self.index.len();
                self.index.insert(m, i);
                self.low.insert(m, i);
                self.stack.push(m);
                let graph = self.graph;
                for (from, to) in graph.edges.keys() {
                    if from != m {
                        continue;
                    }
                    if !self.index.contains_key(to.as_str()) {
                        self.visit(to);
                        let low = self.low[m].min(self.low[to.as_str()]);
                        self.low.insert(m, low);
                    } else if self.stack.contains(&to.as_str()) {
                        let low = self.low[m].min(self.index[to.as_str()]);
                        self.low.insert(m, low);
                    }
                }
                if self.low[m] == self.index[m] {
                    let mut scc = Vec::new();
                    while let Some(top) = self.stack.pop() {
                        scc.push(top.to_string());
                        if top == m {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        scc.sort();
                        self.found.push(scc);
                    }
                }
            }
        }
        let mut t = Tarjan {
            graph: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            found: Vec::new(),
        };
        for m in &self.modules {
            if !t.index.contains_key(m.as_str()) {
                t.visit(m);
            }
        }
        t.found.sort();
        t.found
    }

    /// The edges inside `cycle`, each with the path that makes it.
    fn describe(&self, cycle: &[String]) -> String {
        let edges: Vec<String> = self
            .edges
            .iter()
            .filter(|((f, t), _)| cycle.contains(f) && cycle.contains(t))
            .map(|((f, t), at)| format!("{f} -> {t} ({at})"))
            .collect();
        format!("{} form a cycle: {}", cycle.join(", "), edges.join("; "))
    }
}

/// Reads `lib.rs` through `read` (paths relative to `src/`), then every
/// non-test module file under each top-level module.
fn module_graph(read: &dyn Fn(&str) -> Option<String>) -> Graph {
    let root = code_only(&read("lib.rs").expect("lib.rs"));
    let modules: BTreeSet<String> = mod_decls(&root).into_iter().collect();
    let reexports = root_names(&root, &modules);
    let mut graph = Graph {
        modules: modules.clone(),
        edges: BTreeMap::new(),
    };
    for top in &modules {
        // (path relative to src/ without ".rs", depth below the root)
        let mut files = vec![(top.clone(), 1usize)];
        while let Some((stem, depth)) = files.pop() {
            let rel = [format!("{stem}.rs"), format!("{stem}/mod.rs")]
                .into_iter()
                .find(|r| read(r).is_some())
                .unwrap_or_else(|| panic!("module file {stem}.rs not found"));
            let code = code_only(&read(&rel).unwrap_or_default());
            for child in mod_decls(&code) {
                files.push((format!("{stem}/{child}"), depth + 1));
            }
            for (path, target) in root_paths(&code, depth, &modules, &reexports) {
                if &target != top {
                    graph
                        .edges
                        .entry((top.clone(), target))
                        .or_insert_with(|| format!("{rel}: {path}"));
                }
            }
        }
    }
    graph
}

/// `text` with comments removed, string and char literals blanked, and
/// every `#[cfg(test)]` item (a module, a function, a `use`) dropped.
/// Newlines are kept.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        if ch(&c, i) == '/' && ch(&c, i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch(&c, i) == '/' && ch(&c, i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && ch(&c, i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && ch(&c, i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if ch(&c, i) == 'r'
            && (ch(&c, i + 1) == '"'
                || (ch(&c, i + 1) == '#' && (ch(&c, i + 2) == '"' || ch(&c, i + 2) == '#')))
            && !ident_before(&c, i)
        {
            // A raw string: r"..", r#".."#, br"..".
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            i += 2 + hashes;
            out.push_str("\"\"");
            while i < c.len() {
                let closing = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
                if c[i] == '"' && closing >= hashes {
                    i += 1 + hashes;
                    break;
                }
                if c[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
        } else if ch(&c, i) == '"' {
            i += 1;
            out.push_str("\"\"");
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if c.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
        } else if ch(&c, i) == '\'' && (ch(&c, i + 2) == '\'' || ch(&c, i + 1) == '\\') {
            // A char literal ('"', '\''); a lifetime has no closing quote.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    drop_cfg_test(&out)
}

/// Removes each `#[cfg(test)]` and the item after it (up to its `;` or
/// its matching `}`), keeping the newlines.
fn drop_cfg_test(code: &str) -> String {
    const ATTR: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(start) = rest.find(ATTR) {
        out.push_str(&rest[..start]);
        let item = &rest[start..];
        let mut depth = 0usize;
        let mut end = item.len();
        for (k, ch) in item.char_indices().skip(ATTR.len()) {
            match ch {
                '[' | '(' => depth += 1,
                ']' | ')' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.extend(item[..end].chars().filter(|&ch| ch == '\n'));
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The `mod name;` declarations (file modules) of one file's code.
fn mod_decls(code: &str) -> Vec<String> {
    let words = tokens(code);
    let mut found = Vec::new();
    for w in words.windows(3) {
        if w[0] == "mod" && is_ident(&w[1]) && w[2] == ";" {
            found.push(w[1].clone());
        }
    }
    found
}

/// The names the crate root brings in with `use m::..` (re-exports, mostly),
/// by the top-level module they come from.
fn root_names(root: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let words = tokens(root);
    let mut i = 0;
    while i < words.len() {
        if words[i] != "use" {
            i += 1;
            continue;
        }
        let end = words[i..]
            .iter()
            .position(|w| w == ";")
            .map_or(words.len(), |e| i + e);
        let mut path = &words[i + 1..end];
        if path.first().is_some_and(|w| w == "crate" || w == "self") {
            path = &path[2.min(path.len())..];
        }
        if let Some(m) = path.first().filter(|m| modules.contains(*m)) {
            assert!(
                !path.contains(&"*".to_string()),
                "lib.rs: `use {m}::*` hides which names come from {m}; name them"
            );
            for (k, w) in path.iter().enumerate() {
                let next = path.get(k + 1).map(String::as_str);
                if is_ident(w) && w != "as" && next != Some("::") && next != Some("as") {
                    names.insert(w.clone(), m.clone());
                }
            }
        }
        i = end + 1;
    }
    names
}

/// Every path in `code` (a file `depth` levels below the root, inline
/// `mod x { .. }` blocks adding theirs) that names a top-level module:
/// (the path as written, the module).
fn root_paths(
    code: &str,
    depth: usize,
    modules: &BTreeSet<String>,
    reexports: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let words = tokens(code);
    let mut found = Vec::new();
    // Brace depths at which inline modules opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let resolve = |name: &str| {
        if modules.contains(name) {
            Some(name.to_string())
        } else {
            reexports.get(name).cloned()
        }
    };
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        match w {
            "{" => {
                braces += 1;
                if i >= 2 && words[i - 2] == "mod" && is_ident(&words[i - 1]) {
                    inline.push(braces);
                }
            }
            "}" => {
                if inline.last() == Some(&braces) {
                    inline.pop();
                }
                braces = braces.saturating_sub(1);
            }
            _ => {}
        }
        let preceded_by_path = i > 0 && words[i - 1] == "::";
        let (at_root, mut k, written) = if w == "crate" && !preceded_by_path {
            (true, i + 1, "crate".to_string())
        } else if w == "super" && !preceded_by_path {
            let mut k = i;
            let mut ups = 0;
            while words.get(k).is_some_and(|s| s == "super")
                && words.get(k + 1).is_some_and(|s| s == "::")
            {
                ups += 1;
                k += 2;
            }
            let here = depth + inline.len();
            (ups >= here, k, vec!["super"; ups].join("::"))
        } else {
            (false, i, String::new())
        };
        if w == "crate" && words.get(k).is_some_and(|s| s == "::") {
            k += 1;
        }
        if at_root {
            match words.get(k).map(String::as_str) {
                Some("{") => {
                    // crate::{a::X, Name, b::{..}}: the first word of each item.
                    let mut level = 0;
                    let mut item_start = false;
                    for t in &words[k..] {
                        match t.as_str() {
                            "{" => {
                                level += 1;
                                item_start = level == 1;
                            }
                            "}" => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            "," => item_start = level == 1,
                            name => {
                                if item_start && is_ident(name) {
                                    if let Some(m) = resolve(name) {
                                        found.push((format!("{written}::{{{name}}}"), m));
                                    }
                                }
                                item_start = false;
                            }
                        }
                    }
                }
                Some(name) if is_ident(name) => {
                    if let Some(m) = resolve(name) {
                        found.push((format!("{written}::{name}"), m));
                    }
                }
                _ => {}
            }
        }
        i += 1;
    }
    found
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            if !c[i].is_whitespace() {
                out.push(c[i].to_string());
            }
            i += 1;
        }
    }
    out
}

/// Whether `c[i]` continues an identifier (`br".."` still starts a raw
/// string: `b` is its prefix).
fn ident_before(c: &[char], i: usize) -> bool {
    let word = |j: usize| c.get(j).is_some_and(|p| p.is_alphanumeric() || *p == '_');
    i > 0 && word(i - 1) && !(c[i - 1] == 'b' && (i < 2 || !word(i - 2)))
}

/// `c[j]`, or NUL past the end.
fn ch(c: &[char], j: usize) -> char {
    c.get(j).copied().unwrap_or('\0')
}

fn is_ident(w: &str) -> bool {
    w.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && w.chars().all(|c| c.is_alphanumeric() || c == '_')
}
