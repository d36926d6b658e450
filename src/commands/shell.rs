//! Shell integration: `skiff completion SHELL`, `skiff man --dir DIR`, and the
//! "Examples:" section of every command's help.
//!
//! Commands document their examples in their doc comment, as a last paragraph (or the
//! end of a one-line comment) starting `Example:`. [`with_examples`] moves that text out
//! of the description into clap's `after_help`, so `--help` ends with an `Examples:`
//! section, as Docker's does, and the man pages get an EXAMPLES section from the same
//! text. A unit test walks the whole tree so a command without an example fails CI.

use anyhow::{Context, Result};
use clap::{Args, Command};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages to (created if missing): skiff.1, skiff-run.1,
    /// skiff-network-ls.1, ... one per command and subcommand.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Where an example starts in a doc comment.
const MARKERS: [&str; 2] = ["Examples:", "Example:"];

/// Splits `text` into (description, examples). The examples are the text after the
/// first `Example:`/`Examples:` that starts a paragraph or follows a sentence.
fn split_examples(text: &str) -> Option<(String, Vec<String>)> {
    let pos = MARKERS
        .iter()
        .filter_map(|m| {
            text.match_indices(m)
                .map(|(i, _)| i)
                .find(|&i| i == 0 || text[..i].ends_with(char::is_whitespace))
        })
        .min()?;
    let desc = text[..pos].trim_end().to_string();
    let mut rest = &text[pos..];
    let mut examples = Vec::new();
    // "Example: a Example: b" and one example per line are both accepted.
    while !rest.is_empty() {
        let body = MARKERS
            .iter()
            .find_map(|m| rest.strip_prefix(m))
            .unwrap_or(rest);
        let next = MARKERS
            .iter()
            .filter_map(|m| {
                body.find(&format!("\n{m}"))
                    .or_else(|| body.find(&format!(" {m}")))
            })
            .min()
            .unwrap_or(body.len());
        examples.extend(
            body[..next]
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from),
        );
        rest = body[next..].trim_start();
    }
    Some((desc, examples))
}

/// Moves every command's `Example:` text (see the module doc) into an `Examples:`
/// section after its help, recursively.
pub fn with_examples(mut cmd: Command) -> Command {
    let about = cmd.get_about().map(ToString::to_string);
    let long = cmd.get_long_about().map(ToString::to_string);
    let mut examples = Vec::new();
    if let Some((d, ex)) = about.as_deref().and_then(split_examples) {
        cmd = cmd.about(d);
        examples = ex;
    }
    if let Some((d, ex)) = long.as_deref().and_then(split_examples) {
        // A long description that was only the short one plus examples is dropped, so
        // `--help` stays the short form (clap's derive drops the short one's final dot).
        let short = cmd.get_about().map(ToString::to_string).unwrap_or_default();
        let bare = |s: &str| s.trim().trim_end_matches('.').to_string();
        cmd = if bare(&d) == bare(&short) {
            cmd.long_about(None)
        } else {
            cmd.long_about(d)
        };
        if examples.is_empty() {
            examples = ex;
        }
    }
    if !examples.is_empty() && cmd.get_after_help().is_none() {
        let body: Vec<String> = examples.iter().map(|e| format!("  {e}")).collect();
        cmd = cmd.after_help(format!("Examples:\n{}", body.join("\n")));
    }
    cmd.mut_subcommands(with_examples)
}

/// The example lines of a command's help (its `Examples:` section), if any.
pub fn examples_of(cmd: &Command) -> Vec<String> {
    let text = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    match text.split_once("Examples:") {
        Some((_, rest)) => rest
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        None => Vec::new(),
    }
}

/// `skiff completion SHELL`: the completion script on stdout.
pub fn completion(a: &CompletionArgs) -> Result<i32> {
    let mut cmd = crate::cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "skiff", &mut out);
    write_stdout(&out)
}

fn write_stdout(data: &[u8]) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|()| out.flush()) {
        // `skiff completion bash | head` closes the pipe early: not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

/// `skiff man --dir DIR`: one page per visible command, named like git's and Docker's
/// (`skiff-network-ls.1`), each ending with the command's EXAMPLES.
pub fn man(a: &ManArgs) -> Result<i32> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let mut cmd = crate::cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, &a.dir, &mut written)?;
    eprintln!("wrote {} man pages to {}", written.len(), a.dir.display());
    Ok(0)
}

fn write_pages(cmd: &Command, dir: &std::path::Path, written: &mut Vec<PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    let page = render_page(cmd)?;
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

/// One roff page: clap_mangen's sections, with our EXAMPLES in place of its EXTRA.
fn render_page(cmd: &Command) -> Result<Vec<u8>> {
    use clap_mangen::roff::{roman, Roff};
    let man = clap_mangen::Man::new(cmd.clone())
        .manual("Skiff Manual")
        .source(format!("skiff {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let examples = examples_of(cmd);
    if !examples.is_empty() {
        let mut r = Roff::default();
        r.control("SH", ["EXAMPLES"]);
        r.control("nf", []);
        for e in &examples {
            r.text([roman(e.as_str())]);
        }
        r.control("fi", []);
        r.to_writer(&mut out)?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_are_split_from_descriptions() {
        assert_eq!(
            split_examples("List images. Example: skiff image ls"),
            Some(("List images.".into(), vec!["skiff image ls".into()]))
        );
        assert_eq!(
            split_examples("Run it.\n\nExample: skiff run a\n\nExample: skiff run b"),
            Some((
                "Run it.".into(),
                vec!["skiff run a".into(), "skiff run b".into()]
            ))
        );
        assert_eq!(
            split_examples("Do.\n\nExamples:\n  skiff x\n  skiff y"),
            Some(("Do.".into(), vec!["skiff x".into(), "skiff y".into()]))
        );
        // "Example:" inside a word or an argument is not a marker.
        assert_eq!(split_examples("No example here."), None);
        assert_eq!(split_examples("See MyExample: nothing"), None);
    }

    /// Every command a user can reach, with its path ("skiff network ls").
    fn walk(cmd: &Command, path: &str, out: &mut Vec<(String, Command)>) {
        for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if s.get_name() == "help" {
                continue;
            }
            let p = format!("{path} {}", s.get_name());
            out.push((p.clone(), s.clone()));
            walk(s, &p, out);
        }
    }

    fn all_commands() -> Vec<(String, Command)> {
        let mut cmd = crate::cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(&cmd, "skiff", &mut out);
        out
    }

    #[test]
    fn every_command_has_an_example() {
        let mut missing = Vec::new();
        for (path, c) in all_commands() {
            let ex = examples_of(&c);
            if ex.is_empty() || !ex.iter().all(|e| e.contains("skiff ")) {
                missing.push(path);
            }
        }
        assert!(
            missing.is_empty(),
            "commands without an `Example:` in their doc comment: {missing:?}"
        );
    }

    #[test]
    fn help_ends_with_examples_and_descriptions_are_clean() {
        for (path, c) in all_commands() {
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            assert!(
                !about.contains("Example:"),
                "{path}: example left in its description: {about:?}"
            );
        }
        // A description that was only a sentence plus examples leaves no long form.
        let all = all_commands();
        let svc_ls = all
            .iter()
            .find(|(p, _)| p == "skiff service ls")
            .expect("ls");
        assert!(svc_ls.1.get_long_about().is_none());
        let mut cmd = crate::cli::command();
        let help = cmd
            .find_subcommand_mut("ps")
            .expect("ps")
            .render_long_help()
            .to_string();
        assert!(
            help.trim_end()
                .ends_with("skiff ps -a --format '{{.Names}} {{.Status}}'"),
            "{help}"
        );
        assert!(help.contains("\nExamples:\n  skiff ps"), "{help}");
    }

    /// Docker's list commands, each of which must take `--format table|json|TEMPLATE`.
    const LIST_COMMANDS: &[&str] = &[
        "skiff ps",
        "skiff container ls",
        "skiff images",
        "skiff image ls",
        "skiff image history",
        "skiff history",
        "skiff network ls",
        "skiff volume ls",
        "skiff service ls",
        "skiff service ps",
        "skiff stack ls",
        "skiff stack services",
        "skiff stack ps",
        "skiff node ls",
        "skiff stats",
        "skiff system df",
    ];

    #[test]
    fn every_list_command_takes_format() {
        let all = all_commands();
        let mut missing = Vec::new();
        for (path, c) in &all {
            let is_list = LIST_COMMANDS.contains(&path.as_str())
                || matches!(c.get_name(), "ls" | "ps")
                || c.get_all_aliases().any(|a| a == "list");
            if is_list && !c.get_arguments().any(|a| a.get_long() == Some("format")) {
                missing.push(path.clone());
            }
        }
        for l in LIST_COMMANDS {
            assert!(all.iter().any(|(p, _)| p == l), "{l} does not exist");
        }
        assert!(
            missing.is_empty(),
            "list commands without --format: {missing:?}"
        );
    }

    #[test]
    fn man_pages_have_name_synopsis_and_examples() {
        let mut cmd = crate::cli::command().disable_help_subcommand(true);
        cmd.build();
        let run = cmd.find_subcommand("run").expect("run").clone();
        let page = String::from_utf8(render_page(&run).expect("render")).expect("utf8");
        assert!(page.contains(".TH skiff-run 1"), "{page}");
        for s in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH EXAMPLES"] {
            assert!(page.contains(s), "{s} missing:\n{page}");
        }
        assert!(!page.contains(".SH EXTRA"), "{page}");
    }
}
