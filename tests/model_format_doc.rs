//! Every `kiln` example in docs/model-format.md parses and builds, so the document
//! cannot drift from the language.

use kiln::frontend::lang::{self, ElaborateOptions};

#[test]
fn every_example_in_the_model_format_document_builds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/model-format.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut examples = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```kiln\n") {
        let body = &rest[start + "```kiln\n".len()..];
        let end = body.find("```").expect("every example is closed");
        let source = &body[..end];
        if let Err(err) = lang::load(source, &ElaborateOptions::default()) {
            panic!(
                "{}",
                err.render("docs/model-format.md example", source, false)
            );
        }
        examples += 1;
        rest = &body[end..];
    }
    assert!(examples >= 4, "only {examples} examples found");
}
