//! `kiln --help` and every subcommand's `--help`, snapshotted, so a change to the
//! command line shows up as a readable diff. The subcommands are read from the
//! top-level help, so a new one is covered without editing this test.

use std::process::Command;

fn help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--help")
        .output()
        .expect("the kiln binary runs");
    assert!(output.status.success(), "{args:?}");
    String::from_utf8(output.stdout).expect("help is UTF-8")
}

#[test]
fn help_of_kiln_and_of_every_subcommand() {
    let top = help(&[]);
    insta::assert_snapshot!("help", top);
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|&command| command != "help")
        .collect();
    assert!(commands.contains(&"compile"), "{commands:?}");
    for command in commands {
        insta::assert_snapshot!(format!("help_{command}"), help(&[command]));
    }
}
