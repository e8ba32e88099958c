//! `rust-ms new <name>`: writes a service crate that builds, tests and runs on rust-ms.

use std::path::{Path, PathBuf};

/// Why a service crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "{name:?} cannot name a service: use a lowercase letter, then lowercase letters, digits or _ (at most 40)"
    )]
    BadName { name: String },
    #[error("{} exists and is not empty; choose another --dir", .0.display())]
    NotEmpty(PathBuf),
    #[error("{} is not a checkout of rust-ms (it has no rust-ms/Cargo.toml and rust-ms-build/Cargo.toml)", .0.display())]
    NotACheckout(PathBuf),
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the generated crate takes rust-ms from.
#[derive(Debug, Clone)]
pub enum RustMsSource {
    /// crates.io, at this release.
    Release,
    /// A checkout of the rust-ms repository (its root folder).
    Checkout(PathBuf),
}

impl RustMsSource {
    /// The checkout this program was built from, when it is one and still there (a
    /// `cargo install --path cli`); crates.io otherwise (a `cargo install rust-ms-cli`).
    pub fn installed_from() -> Self {
        let built_from = Path::new(env!("CARGO_MANIFEST_DIR"));
        match built_from.parent() {
            Some(root) if is_checkout(root) => Self::Checkout(root.to_owned()),
            _ => Self::Release,
        }
    }

    /// The checkout at `root` (a relative path is taken from the current directory).
    pub fn checkout(root: &Path) -> Result<Self, ScaffoldError> {
        let absolute =
            std::path::absolute(root).map_err(|_| ScaffoldError::NotACheckout(root.to_owned()))?;
        if is_checkout(&absolute) {
            Ok(Self::Checkout(absolute))
        } else {
            Err(ScaffoldError::NotACheckout(root.to_owned()))
        }
    }

    /// Where the generated crate's rust-ms comes from, for the user to read.
    pub fn describe(&self) -> String {
        match self {
            Self::Release => format!("{} from crates.io", env!("CARGO_PKG_VERSION")),
            Self::Checkout(root) => format!("from the checkout at {}", root.display()),
        }
    }
}

/// A folder holding the rust-ms repository: its facade and build helper crates.
fn is_checkout(root: &Path) -> bool {
    root.join("rust-ms/Cargo.toml").is_file() && root.join("rust-ms-build/Cargo.toml").is_file()
}

/// The files of a new service named `name`, as (path in the crate, contents).
pub fn render(name: &str, source: &RustMsSource) -> Result<Vec<(PathBuf, String)>, ScaffoldError> {
    if !is_service_name(name) {
        return Err(ScaffoldError::BadName {
            name: name.to_owned(),
        });
    }
    let (rust_ms, rust_ms_build) = match source {
        RustMsSource::Release => {
            let version = format!("\"{}\"", env!("CARGO_PKG_VERSION"));
            (version.clone(), version)
        }
        RustMsSource::Checkout(root) => (
            format!(
                "{{ path = {:?} }}",
                root.join("rust-ms").display().to_string()
            ),
            format!(
                "{{ path = {:?} }}",
                root.join("rust-ms-build").display().to_string()
            ),
        ),
    };
    let rust_ms_with_testing = format!(
        "{{ {}, features = [\"testing\"] }}",
        match source {
            RustMsSource::Release => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            RustMsSource::Checkout(root) =>
                format!("path = {:?}", root.join("rust-ms").display().to_string()),
        }
    );
    let fill = |template: &str| {
        template
            .replace("{{rust_ms_with_testing}}", &rust_ms_with_testing)
            .replace("{{rust_ms_build}}", &rust_ms_build)
            .replace("{{rust_ms}}", &rust_ms)
            .replace("{{crate}}", name)
            .replace("{{Name}}", &pascal_case(name))
            .replace("{{NAME}}", &name.to_uppercase())
            .replace("{{name}}", name)
    };
    let files = [
        (
            "Cargo.toml".to_owned(),
            include_str!("../templates/service/Cargo.toml.tmpl"),
        ),
        (
            "build.rs".to_owned(),
            include_str!("../templates/service/build.rs.tmpl"),
        ),
        (
            format!("proto/{name}/v1/{name}.proto"),
            include_str!("../templates/service/proto.tmpl"),
        ),
        (
            "src/lib.rs".to_owned(),
            include_str!("../templates/service/lib.rs.tmpl"),
        ),
        (
            "src/main.rs".to_owned(),
            include_str!("../templates/service/main.rs.tmpl"),
        ),
        (
            format!("tests/{name}.rs"),
            include_str!("../templates/service/test.rs.tmpl"),
        ),
        (
            format!("config/{name}.toml"),
            include_str!("../templates/service/config.toml.tmpl"),
        ),
        (
            "README.md".to_owned(),
            include_str!("../templates/service/README.md.tmpl"),
        ),
        (".gitignore".to_owned(), "/target\n"),
    ];
    Ok(files
        .into_iter()
        .map(|(path, template)| (PathBuf::from(path), fill(template)))
        .collect())
}

/// Writes the crate of [`render`] into `dir`, which must be missing or empty.
pub fn write(dir: &Path, name: &str, source: &RustMsSource) -> Result<Vec<PathBuf>, ScaffoldError> {
    let files = render(name, source)?;
    let occupied = std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied {
        return Err(ScaffoldError::NotEmpty(dir.to_owned()));
    }
    let mut written = Vec::new();
    for (relative, contents) in files {
        let path = dir.join(relative);
        let failed = |source| ScaffoldError::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(failed)?;
        }
        std::fs::write(&path, contents).map_err(failed)?;
        written.push(path);
    }
    Ok(written)
}

/// A name that is at once a registry service name, a crate name, a Rust identifier and a
/// protobuf package: `greeter`, `user_profile`.
fn is_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.ends_with('_')
        && !RESERVED.contains(&name)
}

/// Names the generated code cannot take: Rust keywords, and the crates it depends on.
const RESERVED: &[&str] = &[
    "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else", "enum",
    "extern", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut",
    "pub", "ref", "return", "self", "static", "struct", "super", "trait", "type", "unsafe", "use",
    "where", "while", "yield", "gateway", "prost", "serde", "tonic", "tokio", "test", "core",
    "std", "alloc",
];

/// `user_profile` → `UserProfile`.
fn pascal_case(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_a_crate_a_package_and_a_service_are_refused() {
        for bad in [
            "",
            "Greeter",
            "9lives",
            "my-service",
            "a.b",
            "fn",
            "tonic",
            "trailing_",
        ] {
            assert!(
                matches!(
                    render(bad, &RustMsSource::Release),
                    Err(ScaffoldError::BadName { .. })
                ),
                "{bad:?} was accepted"
            );
        }
        assert!(render("user_profile2", &RustMsSource::Release).is_ok());
    }

    #[test]
    fn every_placeholder_is_filled_and_names_follow_each_language() {
        let files = render(
            "user_profile",
            &RustMsSource::Checkout("/src/rust-ms".into()),
        )
        .unwrap();
        for (path, contents) in &files {
            assert!(
                !contents.contains("{{"),
                "{} keeps a placeholder",
                path.display()
            );
        }
        let file = |name: &str| {
            files
                .iter()
                .find(|(path, _)| path == Path::new(name))
                .map(|(_, contents)| contents.as_str())
                .unwrap_or_else(|| panic!("{name} is not generated"))
        };
        assert!(
            file("proto/user_profile/v1/user_profile.proto").contains("service UserProfileService")
        );
        assert!(file("src/lib.rs").contains("MS_USER_PROFILE__GREETING"));
        assert!(file("Cargo.toml").contains(r#"rust-ms = { path = "/src/rust-ms/rust-ms" }"#));
        assert!(
            file("Cargo.toml")
                .contains(r#"rust-ms-build = { path = "/src/rust-ms/rust-ms-build" }"#)
        );
    }

    #[test]
    fn this_checkout_is_where_an_installed_command_takes_rust_ms_from_and_other_folders_are_refused()
     {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        match RustMsSource::installed_from() {
            RustMsSource::Checkout(found) => assert_eq!(found, root),
            RustMsSource::Release => panic!("built in a checkout, yet took crates.io"),
        }
        assert!(matches!(
            RustMsSource::checkout(root),
            Ok(RustMsSource::Checkout(_))
        ));
        let not_one = RustMsSource::checkout(&root.join("cli"));
        assert!(
            matches!(&not_one, Err(ScaffoldError::NotACheckout(path)) if path.ends_with("cli")),
            "{not_one:?}"
        );
    }

    #[test]
    fn a_folder_with_files_in_it_is_never_written_over() {
        let dir = std::env::temp_dir().join(format!("rust-ms-scaffold-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("keep.txt"), "mine").unwrap();
        let refused = write(&dir, "greeter", &RustMsSource::Release);
        assert!(matches!(refused, Err(ScaffoldError::NotEmpty(_))));
        assert_eq!(
            std::fs::read_to_string(dir.join("keep.txt")).unwrap(),
            "mine"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
