/// Kenneth Kelly's colours of maximum contrast (without white and black), which stay distinguishable
/// from each other and over photographs.
const KELLY: [[u8; 3]; 20] = [
    [0xF3, 0xC3, 0x00],
    [0x87, 0x56, 0x92],
    [0xF3, 0x84, 0x00],
    [0xA1, 0xCA, 0xF1],
    [0xBE, 0x00, 0x32],
    [0xC2, 0xB2, 0x80],
    [0x84, 0x84, 0x82],
    [0x00, 0x88, 0x56],
    [0xE6, 0x8F, 0xAC],
    [0x00, 0x67, 0xA5],
    [0xF9, 0x93, 0x79],
    [0x60, 0x4E, 0x97],
    [0xF6, 0xA6, 0x00],
    [0xB3, 0x44, 0x6C],
    [0xDC, 0xD3, 0x00],
    [0x88, 0x2D, 0x17],
    [0x8D, 0xB6, 0x00],
    [0x65, 0x45, 0x22],
    [0xE2, 0x58, 0x22],
    [0x2B, 0x3D, 0x26],
];

/// The colour of class `index`: black for class 0 (the background), then Kelly's colours, then hues a
/// golden angle apart. The same class index always gets the same colour.
pub fn class_color(index: usize) -> [u8; 3] {
    match index {
        0 => [0, 0, 0],
        i if i <= KELLY.len() => KELLY[i - 1],
        i => {
            let hue = (i as f32 * 137.507_77) % 360.0;
            let saturation = if (i / 3) % 2 == 0 { 0.85 } else { 0.6 };
            let value = [0.95, 0.8, 0.65][i % 3];
            hsv_to_rgb(hue, saturation, value)
        }
    }
}

fn hsv_to_rgb(hue: f32, saturation: f32, value: f32) -> [u8; 3] {
    let c = value * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [r, g, b].map(|v| ((v + m) * 255.0).round() as u8)
}

/// `#rrggbb`.
pub fn hex(color: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", color[0], color[1], color[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_two_hundred_classes_get_distinct_colours() {
        let colors: std::collections::HashSet<[u8; 3]> = (0..200).map(class_color).collect();
        assert_eq!(colors.len(), 200);
        assert_eq!(class_color(0), [0, 0, 0]);
        assert_eq!(hex(class_color(1)), "#f3c300");
    }
}
