//! `--gallery DIR`: what MAXL discovered, to look at. One PNG contact sheet per primary class —
//! one row per auxiliary slot (`<class>.<k>`, its image count as in the summary, its share of
//! the class and mean confidence), up to M thumbnails per row, most confident first, each with
//! its probability — and an `index.html` that shows every sheet with the counts, so a person can
//! see what each sub-class is and name it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use maxl_core::fsio;
use maxl_data::preprocess::{DecodeLimits, decode, read_file};
use maxl_infer::MaxlModel;
use plotters::prelude::*;
use rayon::prelude::*;

use crate::LabelError;
use crate::input::Input;
use crate::report::Tally;

/// Thumbnail side, pixels.
const THUMB: u32 = 96;
const GAP: u32 = 6;
/// Width of the slot-name column.
const LABEL_W: u32 = 210;
const TITLE_H: u32 = 56;
/// Height of one slot row: thumbnail and its caption.
const ROW_H: u32 = THUMB + 26;

/// One class's sheet, as written.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub class: String,
    pub file: String,
    pub images: u64,
}

fn font() -> Result<(), LabelError> {
    let bytes = maxl_core::discovery::plot_font().map_err(LabelError::Invalid)?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| LabelError::Invalid("the plot font is not a usable TrueType font".into()))
}

/// A thumbnail that fits THUMB × THUMB: small images scaled up by a whole factor (crisp pixels),
/// large ones down with a triangle filter. A file that cannot be read becomes a grey square
/// (it was readable when labelled; the sheet is still worth drawing).
fn thumbnail(path: &Path, limits: &DecodeLimits) -> RgbImage {
    let decoded = std::panic::catch_unwind(|| {
        read_file(path, limits)
            .ok()
            .and_then(|b| decode(&b, limits).ok())
    });
    let img = decoded.ok().flatten().unwrap_or_else(|| {
        DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([200; 3])))
    });
    let (w, h) = (img.width(), img.height());
    let side = w.max(h);
    let img = if side <= THUMB / 2 {
        let f = THUMB / side;
        img.resize_exact(w * f, h * f, image::imageops::FilterType::Nearest)
    } else {
        img.resize(THUMB, THUMB, image::imageops::FilterType::Triangle)
    };
    img.to_rgb8()
}

fn blit(canvas: &mut [u8], width: u32, img: &RgbImage, x0: u32, y0: u32) {
    for (x, y, p) in img.enumerate_pixels() {
        let o = (((y0 + y) * width + x0 + x) * 3) as usize;
        canvas[o..o + 3].copy_from_slice(&p.0);
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn text(
    area: &Area<'_>,
    s: &str,
    size: f64,
    color: RGBColor,
    pos: (i32, i32),
) -> Result<(), String> {
    area.draw_text(s, &("sans-serif", size).into_font().color(&color), pos)
        .map_err(|e| e.to_string())
}

/// Draws class `k`'s sheet to `path`.
fn draw_sheet(
    model: &MaxlModel,
    input: &Input,
    tally: &Tally,
    k: usize,
    per_row: usize,
    path: &Path,
) -> Result<(), LabelError> {
    let h = model.hierarchy();
    let class = &model.manifest().classes[k];
    let slots: Vec<usize> = h.slots(k).collect();
    let total = tally.class_total(model, k);
    let width = LABEL_W + per_row.max(1) as u32 * (THUMB + GAP) + GAP;
    let height = TITLE_H + slots.len() as u32 * (ROW_H + GAP) + GAP;
    let mut canvas = vec![255u8; (width * height * 3) as usize];
    // Thumbnails first (decoded in parallel), then text and lines on top.
    let limits = *model.decode_limits();
    let thumbs: Vec<Vec<(f32, RgbImage)>> = slots
        .par_iter()
        .map(|&j| {
            tally.best[j]
                .iter()
                .take(per_row)
                .map(|(p, rel)| (*p, thumbnail(&input.resolve(rel), &limits)))
                .collect()
        })
        .collect();
    for (r, row) in thumbs.iter().enumerate() {
        let y = TITLE_H + r as u32 * (ROW_H + GAP) + GAP;
        for (i, (_, t)) in row.iter().enumerate() {
            let x = LABEL_W + i as u32 * (THUMB + GAP) + GAP;
            // Centred in its cell.
            blit(
                &mut canvas,
                width,
                t,
                x + (THUMB - t.width()) / 2,
                y + (THUMB - t.height()) / 2,
            );
        }
    }
    let drawn: Result<(), String> = (|| {
        let area = BitMapBackend::with_buffer(&mut canvas, (width, height)).into_drawing_area();
        let grey = RGBColor(110, 110, 110);
        let title = format!(
            "{} — {} images in {} sub-classes ({})",
            class.display,
            total,
            slots.len(),
            model.manifest().training.method
        );
        text(&area, &title, 24.0, BLACK, (12, 14))?;
        for (r, &j) in slots.iter().enumerate() {
            let y = (TITLE_H + r as u32 * (ROW_H + GAP) + GAP) as i32;
            area.draw(&PathElement::new(
                vec![(0, y - GAP as i32 / 2), (width as i32, y - GAP as i32 / 2)],
                RGBColor(220, 220, 220),
            ))
            .map_err(|e| e.to_string())?;
            let n = tally.per_slot[j];
            let share = if total > 0 {
                100.0 * n as f64 / total as f64
            } else {
                0.0
            };
            let best = &tally.best[j];
            let mean = if best.is_empty() {
                String::new()
            } else {
                let shown = &best[..best.len().min(per_row)];
                format!(
                    "top {}: mean p {:.2}",
                    shown.len(),
                    shown.iter().map(|b| b.0 as f64).sum::<f64>() / shown.len() as f64
                )
            };
            text(
                &area,
                &format!("{}.{}", class.name, r),
                20.0,
                BLACK,
                (12, y + 10),
            )?;
            let noun = if n == 1 { "image" } else { "images" };
            text(
                &area,
                &format!("{n} {noun} ({share:.1} %)"),
                15.0,
                grey,
                (12, y + 40),
            )?;
            text(&area, &mean, 15.0, grey, (12, y + 62))?;
            if n == 0 {
                text(
                    &area,
                    "no images in this slot",
                    15.0,
                    grey,
                    (LABEL_W as i32 + 8, y + 40),
                )?;
            }
            for (i, (p, _)) in thumbs[r].iter().enumerate() {
                let x = (LABEL_W + i as u32 * (THUMB + GAP) + GAP) as i32;
                text(
                    &area,
                    &format!("{p:.2}"),
                    13.0,
                    grey,
                    (x + THUMB as i32 / 2 - 14, y + THUMB as i32 + 4),
                )?;
            }
        }
        area.present().map_err(|e| e.to_string())
    })();
    drawn.map_err(|e| LabelError::Invalid(format!("{}: cannot draw: {e}", path.display())))?;
    let img = RgbImage::from_raw(width, height, canvas).expect("canvas size");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| LabelError::Invalid(format!("{}: cannot encode PNG: {e}", path.display())))?;
    fsio::write_atomic(path, png.get_ref())?;
    Ok(())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes one sheet per class that has images, and `index.html`. Returns the sheets.
pub fn write(
    model: &MaxlModel,
    input: &Input,
    tally: &Tally,
    per_row: usize,
    dir: &Path,
    csv_name: &str,
) -> Result<Vec<Sheet>, LabelError> {
    font()?;
    std::fs::create_dir_all(dir).map_err(|source| LabelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let classes = &model.manifest().classes;
    let mut sheets = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        let images = tally.class_total(model, k);
        if images == 0 {
            continue;
        }
        let file = format!("{}.png", c.name);
        draw_sheet(model, input, tally, k, per_row, &dir.join(&file))?;
        sheets.push(Sheet {
            class: c.name.clone(),
            file,
            images,
        });
    }
    let m = model.manifest();
    let h = model.hierarchy();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>MAXL sub-classes: {}</title>\n<style>\nbody {{ font-family: sans-serif; margin: 2em; color: #222; }}\ntable {{ border-collapse: collapse; margin-bottom: 2em; }}\ntd, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}\ntd:first-child, th:first-child {{ text-align: left; }}\nimg {{ max-width: 100%; border: 1px solid #ddd; }}\nsection {{ margin-bottom: 3em; }}\n</style>\n</head>\n<body>\n<h1>What the label generator found</h1>\n<p>{} labelled images from <code>{}</code>, model <code>{}</code> ({}, {} on {}, {} epochs). Each sheet shows one primary class; each row is one auxiliary slot (sub-class) with its most confident images first.</p>\n<table>\n<tr><th>class</th><th>images</th><th>per slot</th></tr>\n",
        html_escape(csv_name),
        tally.rows,
        html_escape(csv_name),
        html_escape(&model.dir().display().to_string()),
        html_escape(&m.training.method),
        html_escape(&m.training.architecture),
        html_escape(&m.training.dataset),
        m.training.epochs,
    );
    for s in &sheets {
        let k = classes
            .iter()
            .position(|c| c.name == s.class)
            .expect("a class");
        let per: Vec<String> = h.slots(k).map(|j| tally.per_slot[j].to_string()).collect();
        let _ = writeln!(
            html,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}</td></tr>",
            html_escape(&s.class),
            s.images,
            per.join(" / ")
        );
    }
    html.push_str("</table>\n");
    for s in &sheets {
        let _ = writeln!(
            html,
            "<section id=\"{0}\">\n<h2>{0} ({1} images)</h2>\n<a href=\"{2}\"><img src=\"{2}\" alt=\"{0}: the sub-classes MAXL found\"></a>\n</section>",
            html_escape(&s.class),
            s.images,
            html_escape(&s.file)
        );
    }
    html.push_str("</body>\n</html>\n");
    fsio::write_atomic(&dir.join("index.html"), html.as_bytes())?;
    Ok(sheets)
}

/// The gallery folder's `index.html`.
pub fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.html")
}
