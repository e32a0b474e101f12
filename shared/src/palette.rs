//! Map colours: fixed, recognisable colours for the RSSCN7 land-use classes, a distinct
//! fallback palette for any other label set, and grey for tiles that were not scored.

/// Colour of cells with no prediction.
pub const NO_DATA: [u8; 3] = [200, 200, 200];

/// Fallback colours, in label order, for labels without a fixed colour.
const FALLBACK: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
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
    }
}
