//! The QGIS style of a date's class raster, written beside it as `map_<date>.qml` so that
//! QGIS shows each class in its colour and with its name when the COG is opened: a paletted
//! renderer of band 1, nearest-neighbour resampling (a class is never interpolated).

use aerial_shared::palette;

/// Text as it may stand in an XML attribute or element (the QML style, the GDAL sidecar).
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The QML document for a class raster with these labels (index = pixel value).
pub fn qml(labels: &[String]) -> String {
    let entries: String = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let c = palette::colour(l, i);
            format!(
                "        <paletteEntry value=\"{i}\" color=\"#{:02x}{:02x}{:02x}\" alpha=\"255\" label=\"{}\"/>\n",
                c[0],
                c[1],
                c[2],
                escape(l)
            )
        })
        .collect();
    format!(
        r#"<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="Symbology">
  <pipe>
    <provider>
      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>
    </provider>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <rasterresampler maxOversampling="2"/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_palette_entry_per_class_with_its_colour_and_name() {
        let labels = vec!["field".to_string(), "a<b".to_string()];
        let q = qml(&labels);
        let c = palette::colour("field", 0);
        assert!(q.contains(&format!(
            "value=\"0\" color=\"#{:02x}{:02x}{:02x}\" alpha=\"255\" label=\"field\"",
            c[0], c[1], c[2]
        )));
        assert!(q.contains("value=\"1\""));
        assert!(q.contains("label=\"a&lt;b\""), "names are escaped");
        assert_eq!(q.matches("<paletteEntry").count(), 2);
        assert!(q.contains("type=\"paletted\" band=\"1\""));
    }
}
