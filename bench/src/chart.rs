//! The chart of a benchmark run: a PNG with calls/s and the proxy's CPU time per call,
//! one group of bars per load and one coloured bar per target.
//!
//! Text is drawn by plotters' pure-Rust `ab_glyph` renderer, which needs a font registered
//! at run time: DejaVu Sans, read from [`FONT_PATH`] (Debian package [`FONT_PACKAGE`]).

use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use crate::results::{Results, Row};

/// The font every text of the chart is drawn with.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The Debian package that installs [`FONT_PATH`].
pub const FONT_PACKAGE: &str = "fonts-dejavu-core";

/// The size of the PNG, in pixels.
const SIZE: (u32, u32) = (1400, 900);
/// The family name the font is registered under, and drawn with.
const FAMILY: &str = "sans-serif";
/// Tableau 10: one colour per target, in order of first appearance.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Above this many bars in a panel, the values are not written over them.
const MAX_VALUE_LABELS: usize = 30;

/// Draws the chart of `results` into the PNG file `path`, which must end in `.png`.
pub fn draw(results: &Results, path: &Path) -> Result<(), String> {
    let is_png = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(format!(
            "the chart is a PNG, its file name must end in .png: {}",
            path.display()
        ));
    }
    register()?;
    let failed = |e: &dyn std::fmt::Display| format!("drawing the chart {}: {e}", path.display());

    let loads = distinct(results.rows.iter().map(|r| r.load.as_str()));
    let targets = distinct(results.rows.iter().map(|r| r.target.as_str()));

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let (head, body) = root.split_vertically(100);
    heading(&head, results, &targets).map_err(|e| failed(&e))?;
    let (upper, lower) = body.split_vertically((SIZE.1 - 100) / 2);
    panel(
        &upper,
        "Throughput",
        "calls/s",
        &loads,
        &targets,
        &results.rows,
        |r| Some(r.calls_per_s),
        count,
    )
    .map_err(|e| failed(&e))?;
    panel(
        &lower,
        "Proxy CPU time per call (user + system)",
        "CPU µs / call",
        &loads,
        &targets,
        &results.rows,
        |r| r.cpu_us_per_call,
        micros,
    )
    .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

/// Registers the font with plotters, once per process.
fn register() -> Result<(), String> {
    static REGISTERED: Mutex<bool> = Mutex::new(false);
    let mut registered = REGISTERED.lock().unwrap_or_else(|e| e.into_inner());
    if *registered {
        return Ok(());
    }
    let bytes = std::fs::read(FONT_PATH).map_err(|e| {
        format!(
            "the chart needs the font {FONT_PATH} (Debian package {FONT_PACKAGE}, \
             `apt-get install {FONT_PACKAGE}`): {e}"
        )
    })?;
    // plotters keeps the font for the life of the process; this happens once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT_PATH} is not a font the chart can use"))?;
    *registered = true;
    Ok(())
}

/// The values in order of first appearance, each once.
fn distinct<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn colour(target_index: usize) -> RGBColor {
    COLOURS[target_index % COLOURS.len()]
}

/// A count per second: `850`, `8.5k`, `85k`, `1.23M`.
fn count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds: `4.2`, `42.0`, `420`.
fn micros(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The title, then one legend for both panels: a coloured square and the name of each target.
fn heading<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    results: &Results,
    targets: &[&str],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let width = area.dim_in_pixel().0 as i32;
    let mut title = "rust-ms benchmark".to_owned();
    for part in [&results.date, &results.machine] {
        if !part.trim().is_empty() {
            title.push_str(" · ");
            title.push_str(part.trim());
        }
    }
    // Shrink the title until it fits, for a long machine description.
    let mut size = 28.0;
    let mut style = TextStyle::from((FAMILY, size).into_font());
    while size > 12.0 && area.estimate_text_size(&title, &style)?.0 as i32 > width - 40 {
        size -= 2.0;
        style = TextStyle::from((FAMILY, size).into_font());
    }
    area.draw_text(
        &title,
        &style.pos(Pos::new(HPos::Center, VPos::Top)),
        (width / 2, 14),
    )?;

    let label = TextStyle::from((FAMILY, 18).into_font());
    let (square, gap, spacing) = (16, 8, 36);
    let mut widths = Vec::with_capacity(targets.len());
    for t in targets {
        widths.push(area.estimate_text_size(t, &label)?.0 as i32);
    }
    let total: i32 = widths.iter().map(|w| square + gap + w).sum::<i32>()
        + spacing * (targets.len() as i32 - 1).max(0);
    let mut x = ((width - total) / 2).max(10);
    let y = 70;
    for (i, (t, w)) in targets.iter().zip(&widths).enumerate() {
        area.draw(&Rectangle::new(
            [(x, y - square / 2), (x + square, y + square / 2)],
            colour(i).filled(),
        ))?;
        area.draw_text(
            t,
            &label.pos(Pos::new(HPos::Left, VPos::Center)),
            (x + square + gap, y),
        )?;
        x += square + gap + w + spacing;
    }
    Ok(())
}

/// The x axis of a panel: group `g` spans `[g, g + 1)`, with its tick (and the name of
/// its load) at the centre.
struct Groups(usize);

impl Ranged for Groups {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let share = value / self.0.max(1) as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * share).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|g| g as f64 + 0.5).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

/// One panel: a group of bars per load, a bar per target that has a value for it.
#[allow(clippy::too_many_arguments)]
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    loads: &[&str],
    targets: &[&str],
    rows: &[Row],
    value: impl Fn(&Row) -> Option<f64>,
    label: fn(f64) -> String,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // The bars, by load and target: the first row of each pair that has a value.
    let mut bars: Vec<(usize, usize, f64)> = Vec::new();
    for row in rows {
        let Some(v) = value(row).filter(|v| v.is_finite()) else {
            continue;
        };
        let (Some(l), Some(t)) = (
            loads.iter().position(|l| *l == row.load),
            targets.iter().position(|t| *t == row.target),
        ) else {
            continue;
        };
        if !bars.iter().any(|&(bl, bt, _)| bl == l && bt == t) {
            bars.push((l, t, v.max(0.0)));
        }
    }
    // The slots of a group: the targets with a value in this panel, so none is left empty
    // for a target that has none (the direct calls, measured through no proxy).
    let slots: Vec<usize> = (0..targets.len())
        .filter(|t| bars.iter().any(|&(_, bt, _)| bt == *t))
        .collect();

    let area = area.margin(6, 6, 10, 20);
    let caption_style = TextStyle::from((FAMILY, 22).into_font());
    if bars.is_empty() {
        let (w, h) = area.dim_in_pixel();
        area.draw_text(
            caption,
            &caption_style.pos(Pos::new(HPos::Center, VPos::Top)),
            (w as i32 / 2, 0),
        )?;
        area.draw_text(
            "no measurements",
            &TextStyle::from((FAMILY, 18).into_font())
                .color(&BLACK.mix(0.6))
                .pos(Pos::new(HPos::Center, VPos::Center)),
            (w as i32 / 2, h as i32 / 2),
        )?;
        return Ok(());
    }

    let groups = loads.len().max(1);
    let top = bars.iter().map(|b| b.2).fold(0.0, f64::max);
    let top = if top > 0.0 { top * 1.15 } else { 1.0 };

    let mut chart = ChartBuilder::on(&area)
        .caption(caption, caption_style)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d(Groups(groups), 0.0..top)?;
    let axis_labels = TextStyle::from((FAMILY, 16).into_font());
    let load_name = |v: &f64| {
        loads
            .get(v.floor().max(0.0) as usize)
            .map_or(String::new(), |l| (*l).to_owned())
    };
    // Round ticks without decimals: `15`, not `15.0`.
    let y_label = |v: &f64| {
        if v.fract() == 0.0 {
            count(*v)
        } else {
            label(*v)
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&load_name)
        .y_label_formatter(&y_label)
        .y_labels(8)
        .y_desc(y_desc)
        .axis_desc_style(TextStyle::from((FAMILY, 17).into_font()))
        .label_style(axis_labels)
        .max_light_lines(1)
        .light_line_style(BLACK.mix(0.05))
        .bold_line_style(BLACK.mix(0.15))
        .draw()?;

    // A group spans [g, g + 1): 10 % of space at each side, the rest split among the slots.
    let slot_width = 0.8 / slots.len() as f64;
    let place = |l: usize, t: usize| {
        let s = slots.iter().position(|&x| x == t).unwrap_or(0);
        let x0 = l as f64 + 0.1 + s as f64 * slot_width;
        (x0 + slot_width * 0.08, x0 + slot_width * 0.92)
    };
    chart.draw_series(bars.iter().map(|&(l, t, v)| {
        let (x0, x1) = place(l, t);
        Rectangle::new([(x0, 0.0), (x1, v)], colour(t).filled())
    }))?;
    if bars.len() <= MAX_VALUE_LABELS {
        let grey = BLACK.mix(0.8);
        let value_style = TextStyle::from((FAMILY, 13).into_font())
            .color(&grey)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(bars.iter().map(|&(l, t, v)| {
            let (x0, x1) = place(l, t);
            EmptyElement::at(((x0 + x1) / 2.0, v))
                + Text::new(label(v), (0, -4), value_style.clone())
        }))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(load: &str, target: &str, calls_per_s: f64, cpu: Option<f64>) -> Row {
        Row {
            load: load.to_owned(),
            target: target.to_owned(),
            calls: (calls_per_s * 10.0) as u64,
            failed: 0,
            seconds: 10.0,
            calls_per_s,
            p50_us: 100.0,
            p99_us: 400.0,
            p999_us: 900.0,
            cpu_us_per_call: cpu,
            peak_rss_mb: cpu.map(|_| 20.0),
        }
    }

    fn sample() -> Results {
        let targets = [
            ("direct", 1.0, None),
            ("rust-ms rpc", 0.8, Some(9.5)),
            ("rust-ms /api", 0.6, Some(14.0)),
            ("nginx", 0.7, Some(11.0)),
            ("haproxy", 0.75, Some(8.0)),
        ];
        let loads = [
            ("unary 100 B", 120_000.0),
            ("unary 16 KiB", 45_000.0),
            ("server stream 10 × 100 B", 30_000.0),
            ("JSON 100 B", 90_000.0),
        ];
        let mut rows = Vec::new();
        for (load, base) in loads {
            for (target, share, cpu) in targets {
                // JSON goes through /api only, as in a real run.
                if load.starts_with("JSON") && target == "rust-ms rpc" {
                    continue;
                }
                rows.push(row(load, target, base * share, cpu));
            }
        }
        Results {
            date: "2025-01-31".to_owned(),
            machine: "AMD EPYC 7B13, 8 cores, Linux 6.1".to_owned(),
            pinning: "load on cores 0-3, proxies on 4-7".to_owned(),
            rows,
            ..Results::default()
        }
    }

    #[test]
    fn chart_is_a_png() {
        if !Path::new(FONT_PATH).exists() {
            println!("skipped: the font {FONT_PATH} (package {FONT_PACKAGE}) is not installed");
            // Without it, drawing is a clear error rather than a panic.
            let err = draw(&sample(), &std::env::temp_dir().join("rust-ms-no-font.png"));
            let err = err.unwrap_err();
            assert!(
                err.contains(FONT_PATH) && err.contains(FONT_PACKAGE),
                "{err}"
            );
            return;
        }
        let dir = std::env::temp_dir().join(format!("rust-ms-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        draw(&sample(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        if let Ok(keep) = std::env::var("CHART_KEEP") {
            std::fs::copy(&path, keep).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(bytes.len() > 20_000, "only {} bytes", bytes.len());
    }

    #[test]
    fn chart_of_nothing_is_drawn() {
        if !Path::new(FONT_PATH).exists() {
            println!("skipped: the font {FONT_PATH} (package {FONT_PACKAGE}) is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("rust-ms-chart-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart.png");
        draw(&Results::default(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    }

    #[test]
    fn not_a_png_name_is_an_error() {
        let err = draw(&sample(), Path::new("/tmp/chart.svg")).unwrap_err();
        assert!(err.contains(".png"), "{err}");
    }
}
