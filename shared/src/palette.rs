//! Map colours: fixed, recognisable colours for the RSSCN7 land-use classes, a distinct
//! fallback palette for any other label set, and grey for tiles that were not scored.

/// Colour of cells with no prediction.
pub const NO_DATA: [u8; 3] = [200, 200, 200];

/// Fallback colours, in label order, for labels without a fixed colour: none of them close
/// to a fixed class colour (a new `cropland` must not read as `river_lake`).
const FALLBACK: [[u8; 3]; 8] = [
    [255, 127, 14],
    [227, 119, 194],
    [188, 189, 34],
    [23, 190, 207],
    [128, 0, 0],
    [255, 255, 255],
    [0, 128, 128],
    [0, 0, 0],
];

/// Colour of a label (by name when known, else by its index).
pub fn colour(label: &str, index: usize) -> [u8; 3] {
    match label {
        "field" => [230, 200, 80],
        "forest" => [20, 110, 40],
        "grass" => [140, 210, 100],
        "industry" => [150, 60, 150],
        "parking" => [90, 90, 90],
        "resident" => [220, 60, 50],
        "river_lake" => [40, 110, 220],
        // the class analysts add most on farmland (RSSCN7's `field` is bare soil)
        "cropland" => [205, 133, 63],
        _ => FALLBACK[index % FALLBACK.len()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsscn7_colours_are_distinct() {
        let names = [
            "field",
            "forest",
            "grass",
            "industry",
            "parking",
            "resident",
            "river_lake",
        ];
        let mut c: Vec<[u8; 3]> = names
            .iter()
            .enumerate()
            .map(|(i, n)| colour(n, i))
            .collect();
        c.push(NO_DATA);
        c.sort();
        c.dedup();
        assert_eq!(c.len(), names.len() + 1);
        // a class an analyst adds gets a colour unlike every fixed one
        let dist = |a: [u8; 3], b: [u8; 3]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (f64::from(*x) - f64::from(y)).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for i in 0..FALLBACK.len() {
            for fixed in &c {
                assert!(dist(colour("new_class", i), *fixed) > 60.0, "{i}");
            }
        }
        assert!(dist(colour("cropland", 0), colour("river_lake", 6)) > 150.0);
    }
}
