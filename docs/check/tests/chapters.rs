//! The guide's files against each other: every chapter is in `SUMMARY.md` and compiled by
//! this crate, and no link in the guide or the README points to a file or heading that is
//! not there. (`mdbook build` fails on a chapter missing from disk; this catches the
//! other way round, and links.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn repository() -> PathBuf {
    docs().join("..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The targets of `[text](target)` and `![alt](target)` outside code.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        // Inline code holds no links.
        let prose: String = line
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(_, part)| part)
            .collect();
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// mdBook's id of a heading: lower case, spaces to `-`, only letters, digits, `-`, `_`.
fn anchor_of(heading: &str) -> String {
    heading
        .replace('`', "")
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor_of(line.trim_start_matches('#')));
        }
    }
    found
}

/// Why `target`, linked from `file`, does not resolve; `None` when it does.
fn broken(file: &Path, target: &str) -> Option<String> {
    if target.starts_with("http://") || target.starts_with("https://") {
        return None;
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let linked = if path.is_empty() {
        file.to_owned()
    } else {
        file.parent().unwrap_or(Path::new(".")).join(path)
    };
    if !linked.exists() {
        return Some(format!("{target}: no file {}", linked.display()));
    }
    if !anchor.is_empty() && linked.extension().is_some_and(|e| e == "md") {
        let headings = anchors(&read(&linked));
        if !headings.contains(anchor) {
            return Some(format!(
                "{target}: no heading #{anchor} in {}",
                linked.display()
            ));
        }
    }
    None
}

#[test]
fn every_chapter_is_in_the_summary_and_compiled_and_every_summary_entry_is_a_chapter() {
    let src = docs().join("src");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&src)
        .expect("docs/src")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md") && name != "SUMMARY.md")
        .collect();
    let summary: BTreeSet<String> = links(&read(&src.join("SUMMARY.md"))).into_iter().collect();
    let compiled: BTreeSet<String> = guide::CHAPTERS.iter().map(|c| c.to_string()).collect();
    assert_eq!(on_disk, summary, "docs/src against docs/src/SUMMARY.md");
    assert_eq!(
        on_disk, compiled,
        "docs/src against the chapters docs/check/src/lib.rs compiles"
    );
}

#[test]
fn no_link_in_the_guide_or_the_readme_points_to_a_missing_file_or_heading() {
    let mut files: Vec<PathBuf> = guide::CHAPTERS
        .iter()
        .map(|chapter| docs().join("src").join(chapter))
        .collect();
    files.push(docs().join("src").join("SUMMARY.md"));
    files.push(repository().join("README.md"));
    let mut wrong = Vec::new();
    for file in &files {
        for target in links(&read(file)) {
            if let Some(why) = broken(file, &target) {
                wrong.push(format!("{}: {why}", file.display()));
            }
        }
    }
    assert!(wrong.is_empty(), "broken links:\n  {}", wrong.join("\n  "));
}

/// The Rust blocks of `markdown`, by their opening line's info string.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) if info.starts_with("rust") => current = Some(String::new()),
            (Some(block), Some(_)) => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_readme_and_the_guide_show_the_greeter_as_its_files_are() {
    let greeter = repository().join("examples/greeter");
    let main = read(&greeter.join("src/main.rs"));
    let build = read(&greeter.join("build.rs"));

    let readme = rust_blocks(&read(&repository().join("README.md")));
    assert_eq!(
        readme.first(),
        Some(&main),
        "README.md against examples/greeter/src/main.rs"
    );
    let readme_build = readme
        .get(1)
        .map(|block| block.split_once('\n').map_or("", |(_, rest)| rest));
    assert_eq!(
        readme_build,
        Some(build.as_str()),
        "README.md against examples/greeter/build.rs"
    );

    // The chapter's copy is a doctest: inner doc comments become plain ones there.
    let chapter = rust_blocks(&read(&docs().join("src/writing-a-service.md")));
    let as_doctest = main.replace("//! ", "// ").replace("//!\n", "//\n");
    assert_eq!(
        chapter.first(),
        Some(&as_doctest),
        "writing-a-service.md against main.rs"
    );
    assert_eq!(
        chapter.get(1),
        Some(&format!("// build.rs\n{build}")),
        "writing-a-service.md against build.rs"
    );
}
