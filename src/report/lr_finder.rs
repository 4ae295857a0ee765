//! The learning-rate finder's curve: the loss against the rate on a log scale, with the two
//! suggestions marked.

use std::path::Path;

use plotters::prelude::*;

use crate::error::Result;
use crate::report::{FONT, drawing_error, register_font, save_png};
use crate::train::LrSweep;

/// The picture's width and height.
const SIZE: (u32, u32) = (900, 520);
/// The suggestions' colours: steepest red, valley green.
const STEEPEST: RGBColor = RGBColor(220, 0, 0);
const VALLEY: RGBColor = RGBColor(0, 150, 0);

/// `lr-finder.png`: each step's loss (faint) and the smoothed loss against the learning rate,
/// log scale, with the steepest descent and the valley marked and their rates written.
pub fn draw_lr_finder(path: &Path, sweep: &LrSweep) -> Result<()> {
    register_font();
    let (w, h) = SIZE;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let err = |e| drawing_error(path, e);
        let first = sweep.lrs.first().copied().unwrap_or(1e-7);
        let last = sweep.lrs.last().copied().unwrap_or(10.0).max(first * 10.0);
        // The loss axis from the smoothed curve, so one wild batch does not flatten it, and up to
        // twice where it started: the diverging tail leaves the top rather than squash the rest.
        let (lo, hi) = (sweep.smoothed.iter().filter(|v| v.is_finite()))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let start = (sweep.smoothed.first().copied())
            .filter(|v| v.is_finite())
            .unwrap_or(hi);
        let hi = hi.min(2.0 * start.max(lo));
        let pad = ((hi - lo) * 0.1).max(1e-3);
        let title = format!("Learning-rate finder, phase {}", sweep.phase);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((first..last).log_scale(), (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("learning rate")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .label_style((FONT, 14))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let clipped = |v: f64| v.clamp(lo - pad, hi + pad);
        let raw = (sweep.lrs.iter().zip(&sweep.losses)).map(|(&x, &y)| (x, clipped(y)));
        chart
            .draw_series(LineSeries::new(raw, BLUE.mix(0.25)))
            .map_err(err)?
            .label("loss of each batch")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.mix(0.25)));
        let smooth = (sweep.lrs.iter().zip(&sweep.smoothed)).map(|(&x, &y)| (x, clipped(y)));
        chart
            .draw_series(LineSeries::new(smooth, BLUE.stroke_width(2)))
            .map_err(err)?
            .label("smoothed")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        for (name, lr, colour) in [
            ("steepest", sweep.steepest, STEEPEST),
            ("valley", sweep.valley, VALLEY),
        ] {
            let at = sweep.lrs.iter().position(|&x| x == lr).unwrap_or(0);
            let y = clipped(sweep.smoothed.get(at).copied().unwrap_or(lo));
            chart
                .draw_series(std::iter::once(Circle::new((lr, y), 7, colour.filled())))
                .map_err(err)?
                .label(format!("{name}: {lr:.1e}"))
                .legend(move |(x, y)| Circle::new((x + 9, y), 5, colour.filled()));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK.mix(0.3))
            .background_style(WHITE.mix(0.8))
            .label_font((FONT, 15))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    save_png(path, buf, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_png;

    /// The suggestions are drawn as dots of their colours, the valley's right of the steepest's
    /// where its rate is higher.
    #[test]
    fn the_suggestions_are_marked_where_their_rates_are() {
        let lrs: Vec<f64> = (0..60)
            .map(|i| 1e-6 * 1e6f64.powf(i as f64 / 59.0))
            .collect();
        let smoothed: Vec<f64> = (lrs.iter())
            .map(|lr| 2.0 - 1.5 / (1.0 + (-2.0 * (lr.log10() + 3.0)).exp()) + (lr * 0.5))
            .collect();
        let (steepest, valley) = crate::train::suggestions(&lrs, &smoothed).unwrap();
        let sweep = LrSweep {
            phase: 1,
            losses: smoothed.clone(),
            lrs,
            smoothed,
            steepest,
            valley,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lr-finder.png");
        draw_lr_finder(&path, &sweep).unwrap();
        let png = decode_png(&path);
        let columns = |c: RGBColor| -> Vec<u32> {
            (0..png.width())
                .filter(|&x| (0..png.height()).any(|y| png.get_pixel(x, y).0 == [c.0, c.1, c.2]))
                .collect()
        };
        let (red, green) = (columns(STEEPEST), columns(VALLEY));
        assert!(!red.is_empty() && !green.is_empty(), "both marked");
        // Beyond the legend's dots (upper left), the chart's dots sit in order of their rates.
        let (r, g) = (red.iter().max().unwrap(), green.iter().max().unwrap());
        assert_eq!(
            valley > steepest,
            g > r,
            "steepest {steepest:e} at {r}, valley {valley:e} at {g}"
        );
    }
}
