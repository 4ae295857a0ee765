//! Heat maps over photos: one explained photo (`predict --explain`) and the run report's
//! `explanations.png`, from [`ClassMap`]s ([`crate::explain`]).

use std::path::Path;

use plotters::prelude::*;

use crate::data::ImageSet;
use crate::error::{Error, Result};
use crate::explain::ClassMap;
use crate::report::grid::Tile;
use crate::report::predictions::{RIGHT, WRONG, choose};
use crate::report::{FONT, GridRow, class_name, draw_grid, drawing_error, register_font, save_png};

/// The map at every pixel of a `height` x `width` photo, bilinear between cell centres (each
/// cell covers its share of the photo, as the last stage's cell covers its share of the input).
pub fn upsample(map: &ClassMap, height: usize, width: usize) -> Vec<f32> {
    let axis = |cells: usize, pixels: usize| -> Vec<(usize, usize, f32)> {
        (0..pixels)
            .map(|p| {
                let at = ((p as f32 + 0.5) * cells as f32 / pixels as f32 - 0.5)
                    .clamp(0.0, cells.saturating_sub(1) as f32);
                let lo = at.floor() as usize;
                (lo, (lo + 1).min(cells - 1), at - lo as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(map.height, height), axis(map.width, width));
    let mut out = Vec::with_capacity(height * width);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = map.at(y0, x0) * (1.0 - fx) + map.at(y0, x1) * fx;
            let bottom = map.at(y1, x0) * (1.0 - fx) + map.at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The colour of a map value in `[0, 1]`: the "jet" scale, dark blue (nothing) through cyan,
/// yellow, to dark red (where the class is seen most).
pub fn heat_color(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp = |centre: f32| (1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0);
    [ramp(3.0), ramp(2.0), ramp(1.0)].map(|c| (255.0 * c).round() as u8)
}

/// A planar RGB photo (`height` x `width`, all red, then green, then blue) with `map` laid over
/// it as a heat map: hot cells cover more of the photo than cold ones, which stay visible.
///
/// # Errors
///
/// [`Error::ShapeMismatch`] when `rgb` is not `3·height·width` bytes or the map is empty.
pub fn overlay_heat_map(
    rgb: &[u8],
    height: usize,
    width: usize,
    map: &ClassMap,
) -> Result<Vec<u8>> {
    let plane = height * width;
    if rgb.len() != 3 * plane || plane == 0 || map.values.len() != map.height * map.width {
        return Err(Error::ShapeMismatch {
            tensor: if plane == 0 || rgb.len() != 3 * plane {
                "photo".into()
            } else {
                "class map".into()
            },
            expected: vec![3, height.max(1), width.max(1)],
            found: vec![rgb.len(), map.height, map.width],
        });
    }
    if map.values.is_empty() {
        return Err(Error::ShapeMismatch {
            tensor: "class map".into(),
            expected: vec![1, 1],
            found: vec![map.height, map.width],
        });
    }
    let heat = upsample(map, height, width);
    let mut out = rgb.to_vec();
    for (p, &v) in heat.iter().enumerate() {
        let colour = heat_color(v);
        let alpha = 0.3 + 0.4 * v;
        for (c, &hot) in colour.iter().enumerate() {
            let photo = rgb[c * plane + p] as f32;
            out[c * plane + p] = (photo * (1.0 - alpha) + hot as f32 * alpha).round() as u8;
        }
    }
    Ok(out)
}

/// Writes one explained photo to `path`: the photo and, beside it, the photo under its heat
/// map, with `caption` (the class and its score) written above. Small photos are enlarged to
/// at least 192 pixels a side, sharp.
///
/// # Errors
///
/// As [`overlay_heat_map`]; [`Error::Image`] or [`Error::Io`] when the PNG cannot be written.
pub fn draw_explained_photo(
    path: &Path,
    rgb: &[u8],
    height: usize,
    width: usize,
    map: &ClassMap,
    caption: &str,
) -> Result<()> {
    register_font();
    let hot = overlay_heat_map(rgb, height, width, map)?;
    let scale = 192usize.div_ceil(height.max(width)).max(1);
    let (h, w) = (height * scale, width * scale);
    const BAND: usize = 30;
    const GAP: usize = 8;
    let (full_w, full_h) = (2 * w + 3 * GAP, h + BAND + GAP);
    let mut buf = vec![255u8; full_w * full_h * 3];
    for (k, image) in [rgb, hot.as_slice()].into_iter().enumerate() {
        let x0 = GAP + k * (w + GAP);
        for y in 0..h {
            for x in 0..w {
                let src = (y / scale) * width + x / scale;
                let dst = ((BAND + y) * full_w + x0 + x) * 3;
                for c in 0..3 {
                    buf[dst + c] = image[c * height * width + src];
                }
            }
        }
    }
    {
        let backend = BitMapBackend::with_buffer(&mut buf, (full_w as u32, full_h as u32));
        let root = backend.into_drawing_area();
        let style = (FONT, 20).into_font().color(&BLACK);
        let err = |e| drawing_error(path, e);
        root.draw_text(caption, &style, (GAP as i32, 5))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    save_png(path, buf, full_w as u32, full_h as u32)
}

/// `explanations.png` of a run: up to `count` test images, right and wrong as
/// [`draw_predictions`](crate::report::draw_predictions) frames them (green right, red wrong),
/// each beside its heat map for the predicted class (`maps[k]` belongs to `shown[k]`, as
/// [`explanation_choice`] picks them). Without maps (`maps` empty: inputs whose last stage is
/// 1x1, [`Error::CoarseMap`]), the photos alone under a title that says why, `coarse`.
///
/// # Errors
///
/// [`Error::ShapeMismatch`] when `maps` has neither no map nor one per shown image, or
/// `predictions` not one per image of `set`; otherwise as [`draw_grid`].
pub fn draw_explanations(
    path: &Path,
    set: &ImageSet,
    predictions: &[usize],
    names: &[String],
    shown: &[usize],
    maps: &[ClassMap],
    coarse: Option<&str>,
) -> Result<()> {
    if (!maps.is_empty() && maps.len() != shown.len()) || predictions.len() != set.len() {
        return Err(Error::ShapeMismatch {
            tensor: "explanations (maps, predictions)".into(),
            expected: vec![shown.len(), set.len()],
            found: vec![maps.len(), predictions.len()],
        });
    }
    let mut tiles = Vec::new();
    for (k, &i) in shown.iter().enumerate() {
        let right = predictions[i] == set.label(i);
        let tile = |rgb: Vec<u8>, caption: String| Tile {
            rgb,
            height: set.height(),
            width: set.width(),
            caption,
            color: if right { RIGHT } else { WRONG },
            framed: true,
        };
        let photo = set.image(i)?;
        tiles.push(tile(photo.to_vec(), class_name(names, predictions[i])));
        if let Some(map) = maps.get(k) {
            let hot = overlay_heat_map(&photo, set.height(), set.width(), map)?;
            tiles.push(tile(hot, format!("{:.0}%", 100.0 * map.score)));
        }
    }
    // Four photos and their maps to a row, or eight photos alone.
    let rows: Vec<GridRow> = tiles
        .chunks(8)
        .map(|c| GridRow {
            label: None,
            tiles: c.to_vec(),
        })
        .collect();
    let title = coarse.unwrap_or(EXPLANATIONS_TITLE);
    draw_grid(path, Some(title), &rows)
}

/// The test images `explanations.png` shows: up to `count`, a third of them mistakes where
/// there are any (the rule of `predictions.png`), in the set's order.
pub fn explanation_choice(set: &ImageSet, predictions: &[usize], count: usize) -> Vec<usize> {
    choose(set, predictions, count)
}

const EXPLANATIONS_TITLE: &str =
    "Grad-CAM: where the model looked (red hottest); green right, red wrong";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::decode_png;

    fn map(values: Vec<f32>, height: usize, width: usize) -> ClassMap {
        ClassMap {
            class: 1,
            score: 0.75,
            height,
            width,
            values,
        }
    }

    #[test]
    fn the_scale_runs_blue_to_red_and_upsampling_keeps_the_peak_in_its_cell() {
        assert_eq!(heat_color(0.0), [0, 0, 128]);
        assert_eq!(heat_color(1.0), [128, 0, 0]);
        assert_eq!(heat_color(0.5)[1], 255);
        let m = map(vec![0.0, 0.0, 0.0, 1.0], 2, 2);
        let up = upsample(&m, 8, 8);
        assert_eq!(up[7 * 8 + 7], 1.0, "bottom-right cell's corner");
        assert_eq!(up[0], 0.0);
        let peak = (0..64).fold(0, |b, p| if up[p] > up[b] { p } else { b });
        assert!(
            peak / 8 >= 4 && peak % 8 >= 4,
            "peak {peak} in the bottom-right quarter"
        );
    }

    #[test]
    fn an_explained_photo_is_hot_where_the_map_is() {
        let (h, w) = (16, 16);
        let grey = vec![128u8; 3 * h * w];
        let m = map(vec![1.0, 0.0, 0.0, 0.0], 2, 2);
        let hot = overlay_heat_map(&grey, h, w, &m).unwrap();
        let plane = h * w;
        let (top_left, bottom_right) = (0, plane - 1);
        assert!(
            hot[top_left] > hot[2 * plane + top_left],
            "top-left reddish"
        );
        assert!(
            hot[2 * plane + bottom_right] > hot[bottom_right],
            "bottom-right bluish"
        );
        assert!(overlay_heat_map(&grey[1..], h, w, &m).is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cam.png");
        draw_explained_photo(&path, &grey, h, w, &m, "cat 75%").unwrap();
        let png = decode_png(&path);
        assert!(png.width() >= 2 * 192 && png.height() >= 192);
        let pixels: Vec<[u8; 3]> = png.pixels().map(|p| p.0).collect();
        assert!(pixels.contains(&[128, 128, 128]), "the photo itself");
        assert!(
            pixels.iter().any(|p| p[0] > 150 && p[2] < 110),
            "a hot pixel"
        );
    }

    #[test]
    fn explanations_pair_each_framed_photo_with_its_map() {
        let side = 8;
        let n = 6;
        let set = ImageSet::new(
            vec![90; n * 3 * side * side],
            vec![0, 1, 0, 1, 0, 1],
            side,
            side,
        )
        .unwrap();
        let predictions = vec![0, 1, 1, 1, 0, 0];
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let shown = explanation_choice(&set, &predictions, 4);
        assert_eq!(shown.len(), 4);
        assert!(shown.contains(&2) || shown.contains(&5), "a mistake shown");
        let maps: Vec<ClassMap> = shown.iter().map(|_| map(vec![1.0, 0.0], 1, 2)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("explanations.png");
        draw_explanations(&path, &set, &predictions, &names, &shown, &maps, None).unwrap();
        let pixels: Vec<[u8; 3]> = decode_png(&path).pixels().map(|p| p.0).collect();
        assert!(pixels.contains(&[RIGHT.0, RIGHT.1, RIGHT.2]));
        assert!(pixels.contains(&[WRONG.0, WRONG.1, WRONG.2]));
        assert!(pixels.contains(&[90, 90, 90]), "the photos");
        let err = draw_explanations(&path, &set, &predictions, &names, &shown, &maps[1..], None);
        assert!(err.is_err());
        // No maps: the photos alone, under the reason.
        draw_explanations(&path, &set, &predictions, &names, &shown, &[], Some("1x1")).unwrap();
    }
}
