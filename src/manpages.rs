//! Man pages from the clap definitions (`cli` hands them over): `malog.1` for the
//! whole program and `malog-<command>.1` for each command, written by `malog man`
//! (the Debian package runs it at build time).

use std::path::Path;

/// Writes `malog.1` and one page per command of `root` into `dir` (created if missing).
pub fn write_all(dir: &Path, root: clap::Command) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let root = root.version(crate::VERSION);
    write_page(dir, "malog", root.clone())?;
    for command in root.get_subcommands() {
        let name = format!("malog-{}", command.get_name());
        // The page's title names the page; its usage line the full command.
        let command = command
            .clone()
            .display_name(name.clone())
            .bin_name(format!("malog {}", command.get_name()))
            .version(crate::VERSION);
        write_page(dir, &name, command)?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> std::io::Result<()> {
    let mut text = Vec::new();
    clap_mangen::Man::new(command).render(&mut text)?;
    std::fs::write(dir.join(format!("{name}.1")), text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_page_per_command() {
        let dir = tempfile::tempdir().unwrap();
        let root = <crate::cli::Args as clap::CommandFactory>::command();
        super::write_all(dir.path(), root).unwrap();
        let page = std::fs::read_to_string(dir.path().join("malog-doctor.1")).unwrap();
        assert!(page.contains("malog\\-doctor"), "{page}");
        assert!(
            page.contains("quick_check") || page.contains("Check the config"),
            "{page}"
        );
        assert!(dir.path().join("malog.1").is_file());
        assert!(dir.path().join("malog-backfill.1").is_file());
    }
}
