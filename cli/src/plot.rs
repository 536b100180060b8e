//! `dsr bench ... --plot FILE.svg`: a bench's cases as groups of bars, dsr beside its peers from
//! the same run, drawn with plotters.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::CliError;

/// One case of a bench: its name and a value per series (dsr, then its peers).
pub struct Case {
    pub name: String,
    pub values: Vec<(&'static str, f64)>,
}

impl Case {
    /// A case with the values that were measured (`None`: the peer was not there).
    pub fn new(name: impl Into<String>, values: impl IntoIterator<Item = (&'static str, Option<f64>)>) -> Case {
        Case {
            name: name.into(),
            values: values
                .into_iter()
                .filter_map(|(series, v)| v.filter(|v| v.is_finite()).map(|v| (series, v)))
                .collect(),
        }
    }
}

/// Colours of the series, in order of first appearance (dsr first).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Draws `cases` as grouped bars into an SVG at `path`: `title` above, `unit` on the value axis.
pub fn bars(path: &Path, title: &str, unit: &str, cases: &[Case]) -> Result<(), CliError> {
    let fail = |e: &dyn std::fmt::Display| CliError::failed(format!("cannot draw {}: {e}", path.display()));
    let mut series: Vec<&'static str> = Vec::new();
    for case in cases {
        for &(name, _) in &case.values {
            if !series.contains(&name) {
                series.push(name);
            }
        }
    }
    if series.is_empty() {
        return Err(CliError::failed("nothing was measured to plot"));
    }
    let top = cases
        .iter()
        .flat_map(|c| c.values.iter().map(|&(_, v)| v))
        .fold(0.0f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.4;
    // Each case takes a slot per value it has, and a gap; groups as wide as the widest.
    let width = cases.iter().map(|c| c.values.len()).max().unwrap_or(1) + 1;
    let slots = (cases.len() * width) as f64;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..slots, 0.0..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(unit)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    // Each group's name under its middle.
    let style = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (c, case) in cases.iter().enumerate() {
        let middle = (c * width) as f64 + 0.5 + case.values.len() as f64 / 2.0;
        let (x, y) = chart.backend_coord(&(middle, 0.0));
        root.draw(&Text::new(case.name.clone(), (x, y + 10), style.clone()))
            .map_err(|e| fail(&e))?;
    }
    for (s, &name) in series.iter().enumerate() {
        let colour = COLOURS[s % COLOURS.len()];
        let rects = cases.iter().enumerate().filter_map(move |(c, case)| {
            let slot = case.values.iter().position(|&(n, _)| n == name)?;
            let x = (c * width + slot) as f64 + 0.5;
            Some(Rectangle::new(
                [(x, 0.0), (x + 1.0, case.values[slot].1)],
                colour.filled(),
            ))
        });
        chart
            .draw_series(rects)
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
