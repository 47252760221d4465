//! SCLIP's per-dataset settings (its `configs/cfg_*.py`) with the class-name files they use. Line 1 of
//! each names file is class 0, which also takes the pixels below the probability threshold.

/// One benchmark's class list and inference settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    /// SCLIP's names format: one class per line, synonyms separated by ", ".
    pub names: &'static str,
    pub short_side: u32,
    pub logit_scale: f32,
    pub prob_threshold: f32,
    pub area_threshold: Option<f32>,
}

const fn preset(
    name: &'static str,
    names: &'static str,
    short_side: u32,
    logit_scale: f32,
    prob_threshold: f32,
) -> Preset {
    Preset { name, names, short_side, logit_scale, prob_threshold, area_threshold: None }
}

pub const PRESETS: [Preset; 8] = [
    Preset { area_threshold: Some(0.1), ..preset("voc21", include_str!("cls_voc21.txt"), 336, 65.0, 0.1) },
    preset("context60", include_str!("cls_context60.txt"), 336, 50.0, 0.1),
    preset("coco-object", include_str!("cls_coco_object.txt"), 336, 50.0, 0.1),
    preset("voc20", include_str!("cls_voc20.txt"), 336, 40.0, 0.0),
    preset("context59", include_str!("cls_context59.txt"), 336, 40.0, 0.0),
    // COCO-Stuff 164k, the split SCLIP's headline number is reported on.
    preset("coco-stuff", include_str!("cls_coco_stuff.txt"), 448, 40.0, 0.0),
    preset("cityscapes", include_str!("cls_city_scapes.txt"), 560, 40.0, 0.0),
    preset("ade20k", include_str!("cls_ade20k.txt"), 336, 40.0, 0.0),
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::Vocabulary;

    #[test]
    fn presets_have_sclips_class_and_query_counts() {
        let counts: Vec<(&str, usize, usize)> = PRESETS
            .iter()
            .map(|p| {
                let v = Vocabulary::parse_names_file(p.names).unwrap();
                (p.name, v.len(), v.queries().count())
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("voc21", 21, 56),
                ("context60", 60, 60),
                ("coco-object", 81, 113),
                ("voc20", 20, 30),
                ("context59", 59, 59),
                ("coco-stuff", 171, 171),
                ("cityscapes", 19, 19),
                ("ade20k", 150, 150)
            ]
        );
        assert_eq!(find("voc21").unwrap().area_threshold, Some(0.1));
        assert!(find("pascal").is_none());
    }
}
