//! The module graph, read from the source text of `src/`: which top-level
//! module (`crate::X`) uses which, and, inside each module, which of its
//! submodules uses which. STYLE.md asks that dependencies run one way, so
//! the top-level graph must be acyclic, and so must every module's
//! submodules, except the cycles listed in [`KNOWN_SUBMODULE_CYCLES`], which
//! are being taken apart and must not spread.
//!
//! A reference is a path that starts with `crate::`, `super::` or `self::`
//! (in `use` trees, in code, and in serde's `with = "crate::…"` strings),
//! resolved from the module it stands in, inline modules included; a name
//! the parent module re-exports (`pub use self::nats::NatsSinkSettings`)
//! counts as a reference to the submodule that defines it. Comments and
//! `#[cfg(test)]` items are left out: a test may reach anywhere to build its
//! fixtures, and a doc link is not a dependency.
//!
//! Run with `cargo test --test architecture -- --nocapture` to see the graph's
//! cycles, the known ones included.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// A cycle among a module's submodules that exists today and is being taken apart.
struct KnownCycle {
    /// The module whose submodules form it, e.g. `sinks`.
    parent: &'static str,
    /// The submodules it may involve; a cycle reaching any other one fails.
    members: &'static [&'static str],
    /// Why it exists and who is removing it.
    reason: &'static str,
}

/// The cycles tolerated today. The test fails when one has spread to another
/// submodule, and when one is gone, so that its entry is removed and the
/// cycle cannot come back unnoticed.
const KNOWN_SUBMODULE_CYCLES: &[KnownCycle] = &[];

#[test]
fn the_top_level_modules_depend_on_each_other_without_a_cycle() {
    let graph = Graph::of_tree(&source_root());
    let top = graph.top_level();
    // A scanner that found nothing would pass; these edges are the design
    // (STYLE.md: configuration reads the sinks' settings, startup builds
    // from the configuration), so their absence means the scan is broken.
    for (from, to) in [("configuration", "sinks"), ("startup", "configuration")] {
        assert!(
            top.edges.contains_key(&(from.to_owned(), to.to_owned())),
            "the scan missed {from} → {to}; edges found: {:?}",
            top.edges.keys().collect::<Vec<_>>()
        );
    }
    let cycles = top.cycles();
    println!("top-level edges:");
    for node in &top.nodes {
        let uses: Vec<&str> = top.successors(node).map(String::as_str).collect();
        println!("  {node} → {}", uses.join(", "));
    }
    println!("top level: {}", describe(&cycles));
    assert!(
        cycles.is_empty(),
        "the top-level modules form a cycle; move the shared part lower:\n{}",
        describe(&cycles)
    );
}

#[test]
fn each_modules_submodules_depend_on_each_other_without_a_cycle() {
    let graph = Graph::of_tree(&source_root());
    let mut unexpected = Vec::new();
    let mut found = BTreeSet::new();
    for parent in graph
        .parents()
        .into_iter()
        .filter(|parent| !parent.is_empty())
    {
        let cycles = graph.submodules_of(&parent).cycles();
        let name = parent.join("::");
        if cycles.is_empty() {
            println!("{name}: no cycle");
            continue;
        }
        println!("{name}: {}", describe(&cycles));
        found.insert(name.clone());
        let known = KNOWN_SUBMODULE_CYCLES
            .iter()
            .find(|known| known.parent == name);
        for cycle in &cycles {
            let tolerated = known.is_some_and(|known| {
                cycle
                    .members
                    .iter()
                    .all(|member| known.members.contains(&member.as_str()))
            });
            if !tolerated {
                unexpected.push(format!("{name}: {}", describe(std::slice::from_ref(cycle))));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "submodules form a cycle; move the shared part into a module both use:\n{}",
        unexpected.join("\n")
    );
    let healed: Vec<String> = KNOWN_SUBMODULE_CYCLES
        .iter()
        .filter(|known| !found.contains(known.parent))
        .map(|known| format!("{} (known because: {})", known.parent, known.reason))
        .collect();
    assert!(
        healed.is_empty(),
        "no cycle is left among the submodules of {healed:?}: remove the entry from \
         KNOWN_SUBMODULE_CYCLES in tests/architecture.rs so it cannot come back"
    );
}

/// `src/` of this crate.
fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Cycles in words: each as a path back to its start, with where each step is taken.
fn describe(cycles: &[Cycle]) -> String {
    if cycles.is_empty() {
        return "no cycle".to_owned();
    }
    cycles
        .iter()
        .map(|cycle| {
            let shown = |edges: &[(String, String, String)]| {
                edges
                    .iter()
                    .map(|(from, to, at)| format!("{from} → {to} ({at})"))
                    .collect::<Vec<_>>()
            };
            format!(
                "cycle among {{{}}}, e.g. {}\n  every edge inside it:\n    {}",
                cycle.members.join(", "),
                shown(&cycle.steps).join(", "),
                shown(&cycle.inside).join("\n    ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

// ---------------------------------------------------------------------------
// Reading Rust source as tokens: enough to find paths, without a parser.

/// A token of Rust source, as far as paths are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword (a raw identifier without its `r#`).
    Ident(String),
    /// `::`.
    PathSep,
    /// A string literal's contents, escapes left as written.
    Str(String),
    /// Any other single character: `{`, `}`, `;`, `#`, `*`, …
    Punct(char),
}

/// A token and the line it starts on.
#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// The tokens of `source`: comments dropped, literals kept whole so that a
/// brace inside one is not counted.
fn lex(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let at = |index: usize| chars.get(index).copied().unwrap_or('\0');
    let is_ident_start = |c: char| c.is_alphabetic() || c == '_';
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            let (text, end) = quoted(&chars, i + 1);
            line += text.matches('\n').count();
            tokens.push(Token {
                tok: Tok::Str(text),
                line: start_line,
            });
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{7b}', '{') or a lifetime ('a).
            if at(i + 1) == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if is_ident_start(c) {
            // String prefixes (b"", r#""#, br"", c""), raw identifiers (r#type).
            let mut j = i;
            if matches!(at(j), 'b' | 'c') {
                j += 1;
            }
            let raw = at(j) == 'r';
            if raw {
                j += 1;
            }
            let mut hashes = 0;
            while raw && at(j + hashes) == '#' {
                hashes += 1;
            }
            if j > i && at(j + hashes) == '"' {
                let (text, end) = if raw {
                    raw_quoted(&chars, j + hashes + 1, hashes)
                } else {
                    quoted(&chars, j + 1)
                };
                line += text.matches('\n').count();
                tokens.push(Token {
                    tok: Tok::Str(text),
                    line: start_line,
                });
                i = end;
                continue;
            }
            if c == 'b' && at(i + 1) == '\'' {
                // A byte literal: skip b, then read it as a char literal.
                i += 1;
                continue;
            }
            let mut start = i;
            if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
                start = i + 2;
            }
            let mut end = start;
            while end < chars.len() && is_ident(chars[end]) {
                end += 1;
            }
            tokens.push(Token {
                tok: Tok::Ident(chars[start..end].iter().collect()),
                line: start_line,
            });
            i = end;
        } else if c.is_ascii_digit() {
            // A number; a `.` belongs to it only when a digit follows (so `0..n` stays a range).
            i += 1;
            while i < chars.len()
                && (is_ident(chars[i]) || (chars[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token {
                tok: Tok::PathSep,
                line: start_line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                tok: Tok::Punct(c),
                line: start_line,
            });
            i += 1;
        }
    }
    tokens
}

/// The contents of a `"…"` string whose first character is at `start`, and
/// the index after its closing quote.
fn quoted(chars: &[char], start: usize) -> (String, usize) {
    let mut i = start;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    let end = i.min(chars.len());
    (chars[start..end].iter().collect(), end + 1)
}

/// The contents of a raw string `r##"…"##` (`hashes` of them) from `start`.
fn raw_quoted(chars: &[char], start: usize, hashes: usize) -> (String, usize) {
    let mut i = start;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return (chars[start..i].iter().collect(), i + 1 + hashes);
        }
        i += 1;
    }
    (chars[start..].iter().collect(), chars.len())
}

// ---------------------------------------------------------------------------
// Finding the paths in a file, and the module each stands in.

/// One path found in the source, as written.
#[derive(Debug, Clone)]
struct Reference {
    /// The module the path stands in, from the crate root (inline modules included).
    location: Vec<String>,
    /// The path's segments as written, `crate`/`super`/`self` included.
    segments: Vec<String>,
    /// For a `use` leaf, the name it brings into scope (its alias, if any).
    imported_as: Option<String>,
    /// Where it stands, as `src/…:line`.
    at: String,
}

/// What one file holds.
#[derive(Debug, Default)]
struct Scan {
    /// Every path in it.
    references: Vec<Reference>,
    /// The modules it declares inline (`mod name { … }`), outside tests.
    inline_modules: Vec<Vec<String>>,
    /// File modules declared `#[cfg(test)] mod name;`, to be left out.
    test_modules: Vec<Vec<String>>,
}

/// The module a file under `src/` defines: `sinks/nats.rs` is `sinks::nats`,
/// `sinks/mod.rs` is `sinks`; `lib.rs` and `main.rs` are the root.
fn module_of(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = segments.pop() {
        let stem = last.trim_end_matches(".rs");
        if !["mod", "lib", "main"].contains(&stem) {
            segments.push(stem.to_owned());
        }
    }
    segments
}

/// Finds the paths in the tokens of the file `shown` (for messages), which
/// defines `module`.
fn scan(tokens: &[Token], module: &[String], shown: &str) -> Scan {
    let mut out = Scan::default();
    // A whole file gated by `#![cfg(test)]` is test code.
    if starts_with_cfg_test_inner(tokens) {
        return out;
    }
    let ident = |index: usize| match tokens.get(index).map(|t| &t.tok) {
        Some(Tok::Ident(name)) => Some(name.as_str()),
        _ => None,
    };
    let punct = |index: usize, c: char| tokens.get(index).map(|t| &t.tok) == Some(&Tok::Punct(c));
    let path_sep = |index: usize| tokens.get(index).map(|t| &t.tok) == Some(&Tok::PathSep);
    // Inline modules open at the brace depth their body has.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0_usize;
    let mut i = 0;
    while i < tokens.len() {
        let location: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        let at = format!("{shown}:{}", tokens[i].line);
        match &tokens[i].tok {
            Tok::Punct('#') if punct(i + 1, '[') && is_cfg_test(tokens, i + 1) => {
                let (end, declared) = skip_test_item(tokens, i);
                if let Some(name) = declared {
                    out.test_modules
                        .push([location.clone(), vec![name]].concat());
                }
                i = end;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|(_, open)| *open > depth) {
                    inline.pop();
                }
            }
            Tok::Ident(word) if word == "mod" && ident(i + 1).is_some() && punct(i + 2, '{') => {
                let name = ident(i + 1).unwrap_or_default().to_owned();
                out.inline_modules
                    .push([location.clone(), vec![name.clone()]].concat());
                depth += 1;
                inline.push((name, depth));
                i += 3;
                continue;
            }
            Tok::Ident(word) if word == "use" => {
                let (leaves, end) = use_tree(tokens, i + 1, Vec::new());
                add(&mut out.references, &location, &at, leaves, true);
                i = end;
                continue;
            }
            Tok::Ident(word)
                if ["crate", "super", "self"].contains(&word.as_str()) && path_sep(i + 1) =>
            {
                let (leaves, end) = use_tree(tokens, i, Vec::new());
                add(&mut out.references, &location, &at, leaves, false);
                i = end;
                continue;
            }
            // serde's `with = "crate::redact::list"` and the like name a path in a string.
            Tok::Str(text) if is_path(text) => {
                let (leaves, _) = use_tree(&lex(text), 0, Vec::new());
                add(&mut out.references, &location, &at, leaves, false);
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Records the paths `leaves` found at `at` in `location`; `imports` when
/// they come from a `use`, whose names the parent's re-exports are read from.
fn add(
    references: &mut Vec<Reference>,
    location: &[String],
    at: &str,
    leaves: Vec<Leaf>,
    imports: bool,
) {
    references.extend(leaves.into_iter().map(|(segments, name)| Reference {
        location: location.to_vec(),
        segments,
        imported_as: if imports { name } else { None },
        at: at.to_owned(),
    }));
}

/// Whether `text` is nothing but a path into this crate, as serde's
/// `with = "…"` attributes hold (prose that mentions one is not).
fn is_path(text: &str) -> bool {
    let mut segments = text.split("::");
    let first = segments.next().unwrap_or_default();
    ["crate", "super", "self"].contains(&first)
        && text.contains("::")
        && segments.all(|segment| {
            segment.starts_with(|c: char| c.is_alphabetic() || c == '_')
                && segment.chars().all(|c| c.is_alphanumeric() || c == '_')
        })
}

/// Whether the tokens from `open` (a `[`) are `[cfg(test)]`.
fn is_cfg_test(tokens: &[Token], open: usize) -> bool {
    let expected = [
        Tok::Punct('['),
        Tok::Ident("cfg".to_owned()),
        Tok::Punct('('),
        Tok::Ident("test".to_owned()),
        Tok::Punct(')'),
        Tok::Punct(']'),
    ];
    tokens
        .get(open..open + expected.len())
        .is_some_and(|window| window.iter().map(|t| &t.tok).eq(expected.iter()))
}

/// Whether the file's first tokens are `#![cfg(test)]`.
fn starts_with_cfg_test_inner(tokens: &[Token]) -> bool {
    tokens.first().map(|t| &t.tok) == Some(&Tok::Punct('#'))
        && tokens.get(1).map(|t| &t.tok) == Some(&Tok::Punct('!'))
        && is_cfg_test(tokens, 2)
}

/// Skips the `#[cfg(test)]` at `start`, any further attributes, and the item
/// they gate; returns the index after it, and the module's name when the
/// item is a file module (`mod name;`).
fn skip_test_item(tokens: &[Token], start: usize) -> (usize, Option<String>) {
    let mut i = start;
    // The attributes: `#`, then a bracketed group.
    while tokens.get(i).map(|t| &t.tok) == Some(&Tok::Punct('#')) {
        i += 1;
        let mut nesting = 0;
        while let Some(token) = tokens.get(i) {
            i += 1;
            match token.tok {
                Tok::Punct('[') => nesting += 1,
                Tok::Punct(']') => {
                    nesting -= 1;
                    if nesting == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    let item_start = i;
    // The item ends at a `;` outside any group, or where its body's braces
    // close (unless a `;` follows, as after `const X: T = T { … };`).
    let mut nesting = 0_i32;
    while let Some(token) = tokens.get(i) {
        i += 1;
        match token.tok {
            Tok::Punct('(' | '[' | '{') => nesting += 1,
            Tok::Punct(')' | ']') => nesting -= 1,
            Tok::Punct('}') => {
                nesting -= 1;
                if nesting == 0 && tokens.get(i).map(|t| &t.tok) != Some(&Tok::Punct(';')) {
                    return (i, None);
                }
            }
            Tok::Punct(';') if nesting == 0 => {
                let words: Vec<&Tok> = tokens[item_start..i - 1]
                    .iter()
                    .map(|t| &t.tok)
                    .filter(|tok| !matches!(tok, Tok::Ident(w) if w == "pub" || w == "crate"))
                    .filter(|tok| !matches!(tok, Tok::Punct('(' | ')')))
                    .collect();
                if let [Tok::Ident(keyword), Tok::Ident(name)] = words.as_slice()
                    && keyword == "mod"
                {
                    return (i, Some(name.clone()));
                }
                return (i, None);
            }
            _ => {}
        }
    }
    (i, None)
}

/// A path's segments as written, and the name a `use` brings it in as.
type Leaf = (Vec<String>, Option<String>);

/// Reads a path or `use` tree from `start`, with `prefix` before it; returns
/// each leaf's full segments (a glob ends at the module it opens) with the
/// name it is imported as, and the index after the tree.
fn use_tree(tokens: &[Token], start: usize, prefix: Vec<String>) -> (Vec<Leaf>, usize) {
    let mut segments = prefix;
    let mut i = start;
    // A leading `::` names an external crate, never this one.
    if tokens.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) && segments.is_empty() {
        return (Vec::new(), i + 1);
    }
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(name)) => {
                let name = name.clone();
                i += 1;
                if tokens.get(i).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    segments.push(name);
                    i += 1;
                    continue;
                }
                // The last segment; `self` in a group names the group's module.
                let mut imported = if name == "self" {
                    segments.last().cloned()
                } else {
                    segments.push(name.clone());
                    Some(name)
                };
                if matches!(tokens.get(i).map(|t| &t.tok), Some(Tok::Ident(w)) if w == "as")
                    && let Some(Tok::Ident(alias)) = tokens.get(i + 1).map(|t| &t.tok)
                {
                    imported = Some(alias.clone());
                    i += 2;
                }
                return (vec![(segments, imported)], i);
            }
            Some(Tok::Punct('*')) => return (vec![(segments, None)], i + 1),
            Some(Tok::Punct('{')) => {
                let mut leaves = Vec::new();
                i += 1;
                loop {
                    match tokens.get(i).map(|t| &t.tok) {
                        Some(Tok::Punct('}')) | None => return (leaves, i + 1),
                        Some(Tok::Punct(',')) => i += 1,
                        _ => {
                            let (more, end) = use_tree(tokens, i, segments.clone());
                            leaves.extend(more);
                            i = end.max(i + 1);
                        }
                    }
                }
            }
            // `::<`, a method call, the end of the path: what was read is the path.
            _ => return (vec![(segments, None)], i),
        }
    }
}

// ---------------------------------------------------------------------------
// The graph.

/// Every module of the crate and every reference between them.
struct Graph {
    /// Each module's path from the crate root.
    modules: BTreeSet<Vec<String>>,
    /// Each reference, resolved to an absolute path from the crate root.
    references: Vec<(Vec<String>, Vec<String>, String)>,
    /// For each module, the names its `use` declarations bring in, and what they name.
    imports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

/// A directed graph of named nodes, each edge with where it was first seen.
struct Edges {
    /// The nodes.
    nodes: BTreeSet<String>,
    /// `(from, to)` → where the first reference stands.
    edges: BTreeMap<(String, String), String>,
}

/// A cycle: the members of one strongly connected component, one way round,
/// and every edge inside it (the ones to cut are among them).
struct Cycle {
    /// Every module in the component.
    members: Vec<String>,
    /// A shortest way from the first member back to it: `(from, to, where)`.
    steps: Vec<(String, String, String)>,
    /// Every edge between two members: `(from, to, where)`.
    inside: Vec<(String, String, String)>,
}

impl Graph {
    /// Reads every `.rs` file under `root`.
    fn of_tree(root: &Path) -> Self {
        let mut files = Vec::new();
        collect_rust_files(root, &mut files);
        let mut modules = BTreeSet::new();
        let mut scans = Vec::new();
        let mut test_modules = Vec::new();
        for file in files {
            let relative = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
            let module = module_of(&relative);
            let source = std::fs::read_to_string(&file)
                .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
            let shown = format!("src/{}", relative.display());
            let scan = scan(&lex(&source), &module, &shown);
            modules.insert(module.clone());
            modules.extend(scan.inline_modules.iter().cloned());
            test_modules.extend(scan.test_modules.iter().cloned());
            scans.push((module, scan));
        }
        // Files that only tests compile are left out with their submodules.
        let is_test_only = |module: &Vec<String>| {
            test_modules
                .iter()
                .any(|test: &Vec<String>| module.starts_with(test))
        };
        modules.retain(|module| !is_test_only(module));
        let mut graph = Graph {
            modules,
            references: Vec::new(),
            imports: BTreeMap::new(),
        };
        for (module, scan) in scans {
            if is_test_only(&module) {
                continue;
            }
            for reference in scan.references {
                let Some(target) = graph.resolve(&reference) else {
                    continue;
                };
                if let Some(name) = &reference.imported_as {
                    graph
                        .imports
                        .entry(reference.location.clone())
                        .or_default()
                        .insert(name.clone(), target.clone());
                }
                graph
                    .references
                    .push((reference.location, target, reference.at));
            }
        }
        graph
    }

    /// The absolute path a reference names, when it names one in this crate.
    fn resolve(&self, reference: &Reference) -> Option<Vec<String>> {
        let mut segments = reference.segments.iter().peekable();
        let mut base = match segments.peek().map(|s| s.as_str()) {
            Some("crate") => {
                segments.next();
                Vec::new()
            }
            Some("self") => {
                segments.next();
                reference.location.clone()
            }
            Some("super") => {
                let mut base = reference.location.clone();
                while segments.peek().map(|s| s.as_str()) == Some("super") {
                    segments.next();
                    base.pop()?;
                }
                base
            }
            // A `use` of a child module by its bare name (`pub use settings::X`).
            Some(first) if reference.imported_as.is_some() => {
                let child = [reference.location.clone(), vec![first.to_owned()]].concat();
                if !self.modules.contains(&child) {
                    return None;
                }
                reference.location.clone()
            }
            _ => return None,
        };
        base.extend(segments.cloned());
        Some(base)
    }

    /// The modules with at least two submodules.
    fn parents(&self) -> Vec<Vec<String>> {
        let mut counts: BTreeMap<Vec<String>, usize> = BTreeMap::new();
        for module in &self.modules {
            if let Some((_, parent)) = module.split_last() {
                *counts.entry(parent.to_vec()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .filter(|(_, count)| *count >= 2)
            .map(|(parent, _)| parent)
            .collect()
    }

    /// The graph of the crate's top-level modules.
    fn top_level(&self) -> Edges {
        self.submodules_of(&[])
    }

    /// The graph of `parent`'s direct submodules: one submodule uses another
    /// when anything inside the first names anything inside the second, or
    /// an item `parent` re-exports from it.
    fn submodules_of(&self, parent: &[String]) -> Edges {
        let child_of = |path: &[String]| -> Option<String> {
            let name = path.strip_prefix(parent)?.first()?;
            let child = [parent.to_vec(), vec![name.clone()]].concat();
            self.modules.contains(&child).then(|| name.clone())
        };
        let nodes: BTreeSet<String> = self
            .modules
            .iter()
            .filter_map(|module| child_of(module))
            .collect();
        let mut edges = BTreeMap::new();
        for (location, target, at) in &self.references {
            let Some(from) = child_of(location) else {
                continue;
            };
            let to = child_of(target).or_else(|| {
                // An item of `parent` itself: follow it when `parent` imports
                // it from one of its submodules.
                let name = target.strip_prefix(parent)?.first()?;
                let origin = self.imports.get(parent)?.get(name)?;
                child_of(origin)
            });
            if let Some(to) = to
                && to != from
            {
                edges.entry((from, to)).or_insert_with(|| at.clone());
            }
        }
        Edges { nodes, edges }
    }
}

/// Every `.rs` file under `directory`, in a stable order.
fn collect_rust_files(directory: &Path, files: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(directory)
        .unwrap_or_else(|err| panic!("{}: {err}", directory.display()))
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|err| panic!("{}: {err}", directory.display()));
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rust_files(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

impl Edges {
    /// The targets of `node`'s edges.
    fn successors<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.edges
            .keys()
            .filter(move |(from, _)| from == node)
            .map(|(_, to)| to)
    }

    /// Every cycle, one per strongly connected component of two or more nodes.
    fn cycles(&self) -> Vec<Cycle> {
        let mut cycles = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for node in &self.nodes {
            if seen.contains(node) {
                continue;
            }
            // The component of `node`: what it reaches that also reaches it.
            let forward = self.reachable(node);
            let component: Vec<String> = forward
                .iter()
                .filter(|other| self.reachable(other).contains(node))
                .cloned()
                .collect();
            seen.extend(component.iter().cloned());
            if component.len() < 2 {
                continue;
            }
            let steps = self.shortest_cycle(node, &component);
            let inside = self
                .edges
                .iter()
                .filter(|((from, to), _)| component.contains(from) && component.contains(to))
                .map(|((from, to), at)| (from.clone(), to.clone(), at.clone()))
                .collect();
            cycles.push(Cycle {
                members: component,
                steps,
                inside,
            });
        }
        cycles
    }

    /// The nodes `start` reaches, itself included.
    fn reachable(&self, start: &str) -> BTreeSet<String> {
        let mut reached = BTreeSet::from([start.to_owned()]);
        let mut queue = VecDeque::from([start.to_owned()]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(&node) {
                if reached.insert(next.clone()) {
                    queue.push_back(next.clone());
                }
            }
        }
        reached
    }

    /// A shortest path from `start` back to itself within `component`.
    fn shortest_cycle(&self, start: &str, component: &[String]) -> Vec<(String, String, String)> {
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = VecDeque::from([start.to_owned()]);
        while let Some(node) = queue.pop_front() {
            for next in self.successors(&node) {
                if !component.contains(next) {
                    continue;
                }
                if next == start {
                    let mut path = vec![node.clone(), start.to_owned()];
                    let mut at = node.clone();
                    while let Some(previous) = came_from.get(&at) {
                        path.insert(0, previous.clone());
                        at = previous.clone();
                    }
                    return path
                        .windows(2)
                        .map(|pair| {
                            let key = (pair[0].clone(), pair[1].clone());
                            let at = self.edges.get(&key).cloned().unwrap_or_default();
                            (key.0, key.1, at)
                        })
                        .collect();
                }
                if next != start && !came_from.contains_key(next) {
                    came_from.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        Vec::new()
    }
}

// ---------------------------------------------------------------------------
// The reader itself, on small sources.

/// The references of `source`, as the file `module` would give them, resolved.
fn resolved(source: &str, module: &[&str], modules: &[&[&str]]) -> Vec<String> {
    let module: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
    let scan = scan(&lex(source), &module, "test.rs");
    let graph = Graph {
        modules: modules
            .iter()
            .map(|m| m.iter().map(|s| (*s).to_owned()).collect())
            .collect(),
        references: Vec::new(),
        imports: BTreeMap::new(),
    };
    scan.references
        .iter()
        .filter_map(|reference| graph.resolve(reference))
        .map(|path| path.join("::"))
        .collect()
}

#[test]
fn use_trees_expand_to_every_leaf_and_super_climbs_from_inline_modules() {
    let source = "use crate::{http::{HEALTH_PATH, READY_PATH}, sinks};\n\
                  use super::settings::check_range as range;\n\
                  mod inner { use super::super::nats::Nats; }\n\
                  fn f() { crate::spool::unix_ms(now); let x = self::g::<u8>(); }\n";
    assert_eq!(
        resolved(source, &["sinks", "forward"], &[]),
        [
            "http::HEALTH_PATH",
            "http::READY_PATH",
            "sinks",
            "sinks::settings::check_range",
            "sinks::nats::Nats",
            "spool::unix_ms",
            "sinks::forward::g",
        ]
    );
}

#[test]
fn comments_literals_and_test_items_are_not_references() {
    let source = "// use crate::a::X;\n/* crate::b /* nested */ crate::c */\n\
                  const S: &str = \"crate::d is prose, not a path\";\n\
                  const C: char = '{'; fn lifetime<'a>(x: &'a str) {}\n\
                  #[serde(serialize_with = \"crate::redact::list\")]\n\
                  #[cfg(test)]\nmod tests { use crate::e::Y; }\n\
                  #[cfg(test)]\nfn helper() -> u8 { crate::f::g() }\n\
                  #[cfg(test)]\nuse crate::h;\n\
                  fn after() { crate::kept::k(); }\n";
    assert_eq!(
        resolved(source, &["m"], &[]),
        ["redact::list", "kept::k"],
        "a string is a path only when it is nothing else"
    );
}

#[test]
fn a_bare_use_of_a_child_module_resolves_below_the_module() {
    let source = "pub use settings::{SinkSettings, MAX as MAX_ATTEMPTS};\nuse serde::Serialize;\n";
    assert_eq!(
        resolved(source, &["sinks"], &[&["sinks", "settings"]]),
        ["sinks::settings::SinkSettings", "sinks::settings::MAX"]
    );
}

#[test]
fn a_cycle_is_found_and_named_with_where_each_step_is_taken() {
    let tree = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = tree.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");
    write("a.rs", "use crate::b::B;\n");
    write("b/mod.rs", "mod x;\nmod y;\npub use self::y::Y;\n");
    write("b/x.rs", "use super::Y;\npub fn f() { crate::c::g() }\n");
    write("b/y.rs", "pub struct Y;\nfn h() { super::x::f() }\n");
    write("c.rs", "#[serde(with = \"crate::a\")]\nstruct C;\n");
    let graph = Graph::of_tree(tree.path());
    let top = describe(&graph.top_level().cycles());
    assert!(
        top.contains("a → b (src/a.rs:1)")
            && top.contains("b → c (src/b/x.rs:2)")
            && top.contains("c → a (src/c.rs:1)"),
        "{top}"
    );
    let inside_b = describe(&graph.submodules_of(&["b".to_owned()]).cycles());
    assert!(
        inside_b.contains("x → y (src/b/x.rs:1)") && inside_b.contains("y → x (src/b/y.rs:2)"),
        "a name b re-exports from y counts as y: {inside_b}"
    );
}
