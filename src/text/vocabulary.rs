use crate::error::{Error, Result};

/// The name given to the class that pixels below the probability threshold fall to.
pub const BACKGROUND: &str = "background";

/// One output class and the names (synonyms) it is queried with. Each name is its own text query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub queries: Vec<String>,
}

/// The classes of a segmentation, in output order. Class 0 is where pixels below the probability
/// threshold go, as in SCLIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    classes: Vec<Class>,
}

impl Vocabulary {
    /// The command-line syntax: `,` separates classes, `;` separates the synonyms of one class, e.g.
    /// `"person;man;woman,dog"`. Names are trimmed; empty and repeated names are errors.
    pub fn parse_labels(spec: &str) -> Result<Self> {
        let mut classes = Vec::new();
        for (i, class) in spec.split(',').enumerate() {
            let queries: Vec<String> = class.split(';').map(|q| q.trim().to_string()).collect();
            if queries.iter().any(String::is_empty) {
                return Err(Error::Labels(format!("label {} of {spec:?} is empty", i + 1)));
            }
            classes.push(Class { name: queries[0].clone(), queries });
        }
        let vocabulary = Self { classes };
        vocabulary.reject_repeats()?;
        Ok(vocabulary)
    }

    /// SCLIP's names files: line *i* is class *i*, synonyms separated by `", "`, taken verbatim (SCLIP's
    /// own files have a trailing space in one name and a name that two classes share).
    pub fn parse_names_file(text: &str) -> Result<Self> {
        let mut classes = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                if text.lines().skip(i).all(|l| l.trim().is_empty()) {
                    break;
                }
                return Err(Error::Labels(format!("line {} is empty", i + 1)));
            }
            let queries: Vec<String> = line.split(", ").map(String::from).collect();
            if queries.iter().any(|q| q.trim().is_empty()) {
                return Err(Error::Labels(format!("line {} has an empty name", i + 1)));
            }
            classes.push(Class { name: queries[0].trim().to_string(), queries });
        }
        if classes.is_empty() {
            return Err(Error::Labels("no classes".into()));
        }
        Ok(Self { classes })
    }

    /// Puts a query-less [`BACKGROUND`] class first, unless the first class already is one: it never
    /// wins the argmax and only receives the pixels below the probability threshold, so that those never
    /// fall silently to a real label.
    pub fn with_background(mut self) -> Result<Self> {
        if !self.classes.first().is_some_and(|c| c.name.eq_ignore_ascii_case(BACKGROUND)) {
            self.classes.insert(0, Class { name: BACKGROUND.into(), queries: Vec::new() });
            self.reject_repeats()?;
        }
        Ok(self)
    }

    fn reject_repeats(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for class in &self.classes {
            let names = if class.queries.is_empty() { std::slice::from_ref(&class.name) } else { &class.queries[..] };
            for name in names {
                // The tokenizer lowercases, so "Dog" and "dog" are the same query.
                if !seen.insert(name.to_lowercase()) {
                    return Err(Error::Labels(format!("label {name:?} is given more than once")));
                }
            }
        }
        Ok(())
    }

    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Every query name, class by class, with the index of its class.
    pub fn queries(&self) -> impl Iterator<Item = (usize, &str)> {
        self.classes.iter().enumerate().flat_map(|(c, class)| class.queries.iter().map(move |q| (c, q.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_separate_classes_and_semicolons_synonyms() {
        let v = Vocabulary::parse_labels(" person;man ; woman,dog ").unwrap();
        assert_eq!(
            v.classes()[0],
            Class { name: "person".into(), queries: vec!["person".into(), "man".into(), "woman".into()] }
        );
        assert_eq!(v.classes()[1].name, "dog");
        assert_eq!(v.queries().collect::<Vec<_>>(), [(0, "person"), (0, "man"), (0, "woman"), (1, "dog")]);
    }

    #[test]
    fn empty_blank_and_repeated_labels_are_rejected() {
        for (spec, message) in [
            ("cat,,dog", "label 2 of \"cat,,dog\" is empty"),
            ("   ", "label 1 of \"   \" is empty"),
            ("cat;", "is empty"),
            ("cat,dog,Cat", "label \"Cat\" is given more than once"),
            ("cat;kitty,kitty", "\"kitty\" is given more than once"),
        ] {
            let err = Vocabulary::parse_labels(spec).unwrap_err().to_string();
            assert!(err.contains(message), "{spec:?}: {err}");
        }
    }

    #[test]
    fn background_is_prepended_unless_already_first() {
        let v = Vocabulary::parse_labels("cat,dog").unwrap().with_background().unwrap();
        assert_eq!(v.classes()[0], Class { name: BACKGROUND.into(), queries: vec![] });
        assert_eq!(v.len(), 3);
        let v = Vocabulary::parse_labels("Background;sky,dog").unwrap().with_background().unwrap();
        assert_eq!(v.len(), 2);
        assert!(Vocabulary::parse_labels("cat,background").unwrap().with_background().is_err());
    }

    #[test]
    fn names_files_are_read_verbatim_like_sclip() {
        let v = Vocabulary::parse_names_file("sky, wall, bed\nbed\nwood \n\n").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v.classes()[0].queries, ["sky", "wall", "bed"]);
        assert_eq!(v.classes()[1].queries, ["bed"]);
        assert_eq!(v.classes()[2].queries, ["wood "]);
        assert!(Vocabulary::parse_names_file("a\n\nb").unwrap_err().to_string().contains("line 2 is empty"));
        assert!(Vocabulary::parse_names_file("").is_err());
    }
}
