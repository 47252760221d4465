use std::path::Path;

use crate::error::{Error, Result};

/// The 80 OpenAI ImageNet prompt templates, in SCLIP's order (`prompts/imagenet_template.py`).
const IMAGENET80: &str = include_str!("imagenet80.txt");

const PLACEHOLDER: &str = "{}";

/// The prompts each class name is put into; `{}` stands for the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Templates(Vec<String>);

impl Templates {
    /// SCLIP's default: the 80 OpenAI ImageNet templates.
    pub fn imagenet80() -> Self {
        Self(IMAGENET80.lines().map(String::from).collect())
    }

    /// The single prompt "a photo of a {}.".
    pub fn photo() -> Self {
        Self(vec!["a photo of a {}.".into()])
    }

    /// One template per line; blank lines are skipped, and every other line must hold `{}` once.
    pub fn parse(text: &str) -> Result<Self> {
        let templates: Vec<String> =
            text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(String::from).collect();
        if templates.is_empty() {
            return Err(Error::Templates("no templates".into()));
        }
        if let Some(bad) = templates.iter().find(|t| t.matches(PLACEHOLDER).count() != 1) {
            return Err(Error::Templates(format!("template {bad:?} must contain {PLACEHOLDER} exactly once")));
        }
        Ok(Self(templates))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::parse(&text).map_err(|e| Error::Templates(format!("{}: {e}", path.display())))
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The prompt for one class name, inserted verbatim.
    pub fn fill(template: &str, name: &str) -> String {
        template.replacen(PLACEHOLDER, name, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet80_has_sclips_first_and_last_templates() {
        let t = Templates::imagenet80();
        assert_eq!(t.as_slice().len(), 80);
        assert_eq!(t.as_slice()[0], "a bad photo of a {}.");
        assert_eq!(t.as_slice()[79], "a tattoo of the {}.");
        assert!(t.as_slice().iter().all(|t| t.matches("{}").count() == 1));
    }

    #[test]
    fn user_templates_need_one_placeholder() {
        assert_eq!(Templates::parse("a {} here\n\n  \nthe {}.\n").unwrap().as_slice(), ["a {} here", "the {}."]);
        assert!(Templates::parse("no placeholder").unwrap_err().to_string().contains("exactly once"));
        assert!(Templates::parse("{} and {}").is_err());
        assert!(Templates::parse("\n\n").is_err());
    }

    #[test]
    fn names_are_inserted_verbatim() {
        assert_eq!(Templates::fill("a photo of a {}.", "wood "), "a photo of a wood .");
    }
}
