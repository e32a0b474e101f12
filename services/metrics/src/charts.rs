//! Inline SVG line charts and heat-map colours for the dashboard: drawn on the server, so
//! the page needs nothing from the network.

use maud::{html, Markup};

/// One line of a chart.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// CSS colour.
    pub colour: &'a str,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 380.0;
const H: f64 = 220.0;
const PAD: f64 = 36.0;

/// A line chart with y from `0` to `y_max`, x from 1 to the largest x, axes and a legend.
pub fn line_chart(title: &str, series: &[Series], y_max: f64) -> Markup {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let sx = |x: f64| {
        if x_max > 1.0 {
            PAD + (x - 1.0) / (x_max - 1.0) * (W - 2.0 * PAD)
        } else {
            W / 2.0
        }
    };
    let sy = |y: f64| H - PAD - (y / y_max).clamp(0.0, 1.0) * (H - 2.0 * PAD);
    html! {
        svg.chart width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
            title { (title) }
            text x=(PAD) y="16" font-size="13" { (title) }
            line x1=(PAD) y1=(H - PAD) x2=(W - PAD) y2=(H - PAD) stroke="#444" {}
            line x1=(PAD) y1=(PAD) x2=(PAD) y2=(H - PAD) stroke="#444" {}
            text x="4" y=(PAD + 4.0) font-size="10" { (format!("{y_max:.0}")) }
            text x="4" y=(H - PAD) font-size="10" { "0" }
            text x=(W / 2.0) y=(H - 6.0) font-size="10" text-anchor="middle" { "epoch" }
            @for x in 1..=(x_max as u32) {
                text x=(sx(f64::from(x))) y=(H - PAD + 12.0) font-size="9" text-anchor="middle" { (x) }
            }
            @for (i, s) in series.iter().enumerate() {
                polyline.series fill="none" stroke=(s.colour) stroke-width="2"
                    points=(s.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect::<Vec<_>>().join(" ")) {}
                @for &(x, y) in &s.points {
                    circle cx=(format!("{:.1}", sx(x))) cy=(format!("{:.1}", sy(y))) r="3" fill=(s.colour) {
                        title { (format!("{}: epoch {x}, {y:.2}", s.name)) }
                    }
                }
                rect x=(W - PAD - 110.0) y=(PAD + 14.0 * i as f64 - 9.0) width="10" height="10" fill=(s.colour) {}
                text x=(W - PAD - 96.0) y=(PAD + 14.0 * i as f64) font-size="11" { (s.name) }
            }
        }
    }
}

/// Background colour of a confusion-matrix cell holding `share` (0..1) of its row.
pub fn heat(share: f64) -> String {
    let a = share.clamp(0.0, 1.0);
    format!(
        "background: rgba(31, 119, 180, {a:.2}); color: {}",
        if a > 0.5 { "#fff" } else { "#000" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_one_polyline_per_series_and_escapes_names() {
        let m = line_chart(
            "err",
            &[
                Series {
                    name: "<b>a</b>",
                    colour: "red",
                    points: vec![(1.0, 10.0), (2.0, 5.0)],
                },
                Series {
                    name: "b",
                    colour: "blue",
                    points: vec![(1.0, 50.0)],
                },
            ],
            100.0,
        )
        .into_string();
        assert_eq!(m.matches("<polyline").count(), 2);
        assert!(m.contains("&lt;b&gt;a&lt;/b&gt;"));
        assert!(!m.contains("<b>a</b>"));
    }
}
