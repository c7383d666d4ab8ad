//! `berth completions`: the scripts the real binary prints load in a real bash and
//! complete berth's commands; unknown shells are usage errors.

mod common;

use std::process::Command;

use common::run_with_stdin;

/// Run `script` in bash after sourcing `berth completions bash`; its stdout.
fn in_bash(script: &str) -> String {
    let out = run_with_stdin(&["completions", "bash"], &[], "");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.bash");
    std::fs::write(&path, &out.stdout).unwrap();
    let run = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!("source {}; {script}", path.display()))
        .output()
        .expect("run bash");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).into_owned()
}

#[test]
fn bash_defines_a_completion_for_berth_that_completes_commands() {
    let defined = in_bash("complete -p berth");
    assert!(
        defined.contains("-F _berth") && defined.trim_end().ends_with(" berth"),
        "{defined}"
    );
    let words = in_bash(
        "COMP_WORDS=(berth tokens s); COMP_CWORD=2; COMP_LINE='berth tokens s'; COMP_POINT=14; \
         _berth berth s tokens; printf '%s\\n' \"${COMPREPLY[@]}\"",
    );
    assert_eq!(words.trim(), "set-redaction", "{words}");
}

#[test]
fn zsh_and_fish_scripts_name_berth_and_other_shells_are_usage_errors() {
    let zsh = run_with_stdin(&["completions", "zsh"], &[], "");
    assert_eq!(zsh.code, 0);
    assert!(zsh.stdout.starts_with("#compdef berth"), "{}", zsh.stdout);
    let fish = run_with_stdin(&["completions", "fish"], &[], "");
    assert_eq!(fish.code, 0);
    assert!(fish.stdout.contains("complete -c berth"), "{}", fish.stdout);
    let other = run_with_stdin(&["completions", "powershell"], &[], "");
    assert_eq!(other.code, 2);
    assert!(other.stderr.contains("bash, zsh, fish"), "{}", other.stderr);
}
