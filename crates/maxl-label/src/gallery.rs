//! `--gallery DIR`: what MAXL discovered, to look at. One PNG contact sheet per primary class —
//! one row per auxiliary slot (`<class>.<k>`, its image count as in the summary, its share of
//! the class and mean confidence), up to M thumbnails per row, most confident first, each with
//! its probability — and an `index.html` that shows every sheet with the counts, so a person can
//! see what each sub-class is and name it.
//!
//! For a `maxl-weighted` model (a CSV with `aux_weight`) every caption also shows the image's
//! weight (`0.87 w=0.83`), each slot its mean weight, and each sheet ends with a tinted row of the
//! class's lowest-weighted images (captioned with their sub-class, `#3 w=0.12`): the images whose
//! auxiliary loss the generator turned down most. The index adds the weights' distribution, a
//! mean-weight column and, per class, the lowest-weighted images by path.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use maxl_core::fsio;
use maxl_infer::MaxlModel;
use maxl_preprocess::{DecodeLimits, decode, read_file};
use plotters::prelude::*;
use rayon::prelude::*;

use crate::LabelError;
use crate::input::Input;
use crate::report::{Pick, Tally};

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
    /// The class (folder-safe name).
    pub class: String,
    /// The PNG's file name in the gallery folder.
    pub file: String,
    /// The class's labelled images.
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
    let side = w.max(h).max(1);
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

/// Class `k`'s sheet: what it shows and its size.
struct ClassSheet<'a> {
    model: &'a MaxlModel,
    tally: &'a Tally,
    k: usize,
    /// The class's slots (indices among all Σψ slots), one row each.
    slots: Vec<usize>,
    /// Whether the sheet shows weights, with a last row of the lowest-weighted images.
    weighted: bool,
    per_row: usize,
    width: u32,
    height: u32,
}

/// A row's thumbnails with what their captions show, in the row's order.
type Thumbs = Vec<(Pick, RgbImage)>;

/// The lowest-weighted row's band colour.
const LOW_BAND: [u8; 3] = [252, 240, 238];

/// The top of slot row `r`.
fn row_y(r: usize) -> u32 {
    TITLE_H + r as u32 * (ROW_H + GAP) + GAP
}

/// The left edge of thumbnail `i` of a row.
fn cell_x(i: usize) -> u32 {
    LABEL_W + i as u32 * (THUMB + GAP) + GAP
}

impl<'a> ClassSheet<'a> {
    fn new(model: &'a MaxlModel, tally: &'a Tally, k: usize, per_row: usize) -> Self {
        let slots: Vec<usize> = model.hierarchy().slots(k).collect();
        let weighted = tally.weighted();
        let rows = slots.len() + weighted as usize;
        Self {
            width: LABEL_W + per_row.max(1) as u32 * (THUMB + GAP) + GAP,
            height: TITLE_H + rows as u32 * (ROW_H + GAP) + GAP,
            model,
            tally,
            k,
            slots,
            weighted,
            per_row,
        }
    }

    /// Draws the sheet to `path`: thumbnails first (decoded in parallel), then text and lines
    /// on top.
    fn write(&self, input: &Input, path: &Path) -> Result<(), LabelError> {
        let mut canvas = vec![255u8; (self.width * self.height * 3) as usize];
        if self.weighted {
            // The lowest-weighted row's band, under everything else.
            let y0 = row_y(self.slots.len()) - GAP / 2;
            for px in canvas[(y0 * self.width * 3) as usize..].chunks_exact_mut(3) {
                px.copy_from_slice(&LOW_BAND);
            }
        }
        let thumbs = self.thumbnails(input);
        self.blit(&mut canvas, &thumbs);
        self.draw(&mut canvas, &thumbs)
            .map_err(|e| LabelError::Invalid(format!("{}: cannot draw: {e}", path.display())))?;
        let img = RgbImage::from_raw(self.width, self.height, canvas).ok_or_else(|| {
            LabelError::Invalid(format!(
                "{}: the sheet's canvas is too small",
                path.display()
            ))
        })?;
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .map_err(|e| {
                LabelError::Invalid(format!("{}: cannot encode PNG: {e}", path.display()))
            })?;
        fsio::write_atomic(path, png.get_ref())?;
        Ok(())
    }

    /// Every row's thumbnails: the slots' most confident images, then (weighted) the class's
    /// lowest-weighted ones.
    fn thumbnails(&self, input: &Input) -> Vec<Thumbs> {
        let limits = *self.model.decode_limits();
        let mut rows: Vec<&[Pick]> = self.slots.iter().map(|&j| self.tally.best(j)).collect();
        if self.weighted {
            rows.push(self.tally.lowest(self.k));
        }
        rows.par_iter()
            .map(|picks| {
                picks
                    .iter()
                    .take(self.per_row)
                    .map(|p| (p.clone(), thumbnail(&input.resolve(&p.path), &limits)))
                    .collect()
            })
            .collect()
    }

    /// Copies the thumbnails into their cells, centred.
    fn blit(&self, canvas: &mut [u8], thumbs: &[Thumbs]) {
        for (r, row) in thumbs.iter().enumerate() {
            let y = row_y(r);
            for (i, (_, t)) in row.iter().enumerate() {
                let x = cell_x(i);
                blit(
                    canvas,
                    self.width,
                    t,
                    x + (THUMB - t.width()) / 2,
                    y + (THUMB - t.height()) / 2,
                );
            }
        }
    }

    /// The title, and every row's lines and text.
    fn draw(&self, canvas: &mut [u8], thumbs: &[Thumbs]) -> Result<(), String> {
        let area =
            BitMapBackend::with_buffer(canvas, (self.width, self.height)).into_drawing_area();
        let class = &self.model.manifest().classes[self.k];
        let mut title = format!(
            "{} — {} images in {} sub-classes ({})",
            class.display,
            self.tally.class_total(self.model, self.k),
            self.slots.len(),
            self.model.manifest().training.method
        );
        if let Some(w) = self.tally.class_mean_weight(self.model, self.k) {
            title.push_str(&format!(", mean weight {w:.2}"));
        }
        text(&area, &title, 24.0, BLACK, (12, 14))?;
        for (r, (&j, row)) in self.slots.iter().zip(thumbs).enumerate() {
            self.draw_row(&area, r, j, row)?;
        }
        if let Some(row) = thumbs.get(self.slots.len()) {
            self.draw_lowest(&area, row)?;
        }
        area.present().map_err(|e| e.to_string())
    }

    /// A rule above row `r`.
    fn rule(&self, area: &Area<'_>, r: usize) -> Result<(), String> {
        let y = row_y(r) as i32 - GAP as i32 / 2;
        area.draw(&PathElement::new(
            vec![(0, y), (self.width as i32, y)],
            RGBColor(220, 220, 220),
        ))
        .map_err(|e| e.to_string())
    }

    /// Row `r`'s captions under its thumbnails, centred: `0.87` (the slot's probability), with
    /// weights `0.87 w=0.83`; in the lowest-weighted row `#3 w=0.12` (sub-class 3).
    fn captions(
        &self,
        area: &Area<'_>,
        r: usize,
        row: &Thumbs,
        lowest: bool,
    ) -> Result<(), String> {
        let grey = RGBColor(110, 110, 110);
        let y = row_y(r) as i32 + THUMB as i32 + 4;
        let first_slot = self.slots.first().copied().unwrap_or(0);
        for (i, (p, _)) in row.iter().enumerate() {
            let caption = match (p.weight, lowest) {
                (Some(w), true) => format!("#{} w={w:.2}", p.slot.saturating_sub(first_slot)),
                (Some(w), false) => format!("{:.2} w={w:.2}", p.probability),
                (None, _) => format!("{:.2}", p.probability),
            };
            let x = if p.weight.is_some() {
                let style: TextStyle<'_> = ("sans-serif", 13.0).into_font().into();
                let width = area
                    .estimate_text_size(&caption, &style)
                    .map_or(THUMB as i32, |(w, _)| w as i32);
                cell_x(i) as i32 + (THUMB as i32 - width) / 2
            } else {
                // As it always was: a probability's four characters about the middle.
                cell_x(i) as i32 + THUMB as i32 / 2 - 14
            };
            text(area, &caption, 13.0, grey, (x, y))?;
        }
        Ok(())
    }

    /// The last row (weighted sheets): the class's lowest-weighted images, whatever their slot.
    fn draw_lowest(&self, area: &Area<'_>, row: &Thumbs) -> Result<(), String> {
        let r = self.slots.len();
        self.rule(area, r)?;
        let y = row_y(r) as i32;
        let grey = RGBColor(110, 110, 110);
        text(
            area,
            "lowest weight",
            20.0,
            RGBColor(150, 40, 30),
            (12, y + 10),
        )?;
        text(
            area,
            "auxiliary loss counted least",
            15.0,
            grey,
            (12, y + 40),
        )?;
        let class = &self.model.manifest().classes[self.k].name;
        let key = format!("#k = {class}.k");
        text(area, &key, 13.0, grey, (12, y + 62))?;
        if let Some(w) = self.tally.class_mean_weight(self.model, self.k) {
            text(
                area,
                &format!("class mean w {w:.2}"),
                15.0,
                grey,
                (12, y + 84),
            )?;
        }
        self.captions(area, r, row, true)
    }

    /// Slot row `r` (slot `j`): a rule above it, the slot's name, count, share and mean
    /// confidence, and each thumbnail's probability.
    fn draw_row(&self, area: &Area<'_>, r: usize, j: usize, row: &Thumbs) -> Result<(), String> {
        let grey = RGBColor(110, 110, 110);
        let y = row_y(r) as i32;
        self.rule(area, r)?;
        let n = self.tally.slot(j);
        let total = self.tally.class_total(self.model, self.k);
        let share = if total > 0 {
            100.0 * n as f64 / total as f64
        } else {
            0.0
        };
        let class = &self.model.manifest().classes[self.k];
        text(
            area,
            &format!("{}.{}", class.name, r),
            20.0,
            BLACK,
            (12, y + 10),
        )?;
        let noun = if n == 1 { "image" } else { "images" };
        text(
            area,
            &format!("{n} {noun} ({share:.1} %)"),
            15.0,
            grey,
            (12, y + 40),
        )?;
        text(area, &self.mean(j), 15.0, grey, (12, y + 62))?;
        if let Some(w) = self.tally.slot_mean_weight(j) {
            text(area, &format!("mean w {w:.2}"), 15.0, grey, (12, y + 84))?;
        }
        if n == 0 {
            text(
                area,
                "no images in this slot",
                15.0,
                grey,
                (LABEL_W as i32 + 8, y + 40),
            )?;
        }
        self.captions(area, r, row, false)
    }

    /// `top M: mean p 0.87` over the thumbnails shown in slot `j`'s row (empty without any).
    fn mean(&self, j: usize) -> String {
        let best = self.tally.best(j);
        if best.is_empty() {
            return String::new();
        }
        let shown = &best[..best.len().min(self.per_row)];
        format!(
            "top {}: mean p {:.2}",
            shown.len(),
            shown.iter().map(|b| b.probability as f64).sum::<f64>() / shown.len() as f64
        )
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The most thumbnails per slot a sheet shows.
pub const MAX_PER_ROW: usize = 64;

/// Writes one sheet per class that has images, with up to `per_row` (1 to [`MAX_PER_ROW`])
/// thumbnails per slot, and `index.html`. `tally` is the CSV `csv_name`'s, labelled by `model`
/// from `input`. Returns the sheets.
pub fn write(
    model: &MaxlModel,
    input: &Input,
    tally: &Tally,
    per_row: usize,
    dir: &Path,
    csv_name: &str,
) -> Result<Vec<Sheet>, LabelError> {
    if !(1..=MAX_PER_ROW).contains(&per_row) {
        return Err(LabelError::Invalid(format!(
            "gallery: {per_row} thumbnails per slot; expected 1 to {MAX_PER_ROW}"
        )));
    }
    font()?;
    std::fs::create_dir_all(dir).map_err(|source| LabelError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut sheets = Vec::new();
    for (k, c) in model.manifest().classes.iter().enumerate() {
        let images = tally.class_total(model, k);
        if images == 0 {
            continue;
        }
        let file = format!("{}.png", c.name);
        ClassSheet::new(model, tally, k, per_row).write(input, &dir.join(&file))?;
        sheets.push(Sheet {
            class: c.name.clone(),
            file,
            images,
        });
    }
    let html = index_html(model, tally, &sheets, csv_name);
    fsio::write_atomic(&index_path(dir), html.as_bytes())?;
    Ok(sheets)
}

/// The paragraph on `aux_weight` of a weighted index (empty without weights).
fn weights_html(tally: &Tally) -> String {
    let Some(w) = tally.weight_stats() else {
        return String::new();
    };
    format!(
        "<p>The label generator is <code>maxl-weighted</code>: it also gave every image a weight <code>aux_weight</code> in (0, 2), how strongly that image's auxiliary loss counted in training (1 as in plain MAXL, near 0 where the generator judged the image's auxiliary task unhelpful). Captions show it as <code>w=…</code>; each sheet's last, tinted row shows the class's lowest-weighted images (<code>#k</code>: sub-class <code>&lt;class&gt;.k</code>). Over all {} images: mean {:.3}, p10 {:.3}, median {:.3}, p90 {:.3} (min {:.3}, max {:.3}).</p>\n",
        w.count, w.mean, w.p10, w.p50, w.p90, w.min, w.max
    )
}

/// Class `k`'s lowest-weighted images as a table: path, sub-class, weight, probability.
fn lowest_html(model: &MaxlModel, tally: &Tally, k: usize) -> String {
    let low = tally.lowest(k);
    if low.is_empty() {
        return String::new();
    }
    let mut html = format!(
        "<details open>\n<summary>The {} lowest-weighted images: their auxiliary loss counted least in training</summary>\n<table>\n<tr><th>path</th><th>sub-class</th><th>weight</th><th>probability</th></tr>\n",
        low.len()
    );
    for p in low {
        let label = model
            .manifest()
            .aux_slots
            .get(p.slot)
            .map_or(String::new(), |s| html_escape(s));
        let _ = writeln!(
            html,
            "<tr><td><code>{}</code></td><td>{label}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            html_escape(&p.path),
            p.weight.unwrap_or(f32::NAN),
            p.probability
        );
    }
    html.push_str("</table>\n</details>\n");
    html
}

/// The index page: the run, a table of the counts per class and slot, and every sheet (with
/// weights: their distribution, each class's mean and lowest-weighted images).
fn index_html(model: &MaxlModel, tally: &Tally, sheets: &[Sheet], csv_name: &str) -> String {
    let m = model.manifest();
    let weighted = tally.weighted();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>MAXL sub-classes: {}</title>\n<style>\nbody {{ font-family: sans-serif; margin: 2em; color: #222; }}\ntable {{ border-collapse: collapse; margin-bottom: 2em; }}\ntd, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}\ntd:first-child, th:first-child {{ text-align: left; }}\nimg {{ max-width: 100%; border: 1px solid #ddd; }}\nsection {{ margin-bottom: 3em; }}\n</style>\n</head>\n<body>\n<h1>What the label generator found</h1>\n<p>{} labelled images from <code>{}</code>, model <code>{}</code> ({}, {} on {}, {} epochs). Each sheet shows one primary class; each row is one auxiliary slot (sub-class) with its most confident images first.</p>\n",
        html_escape(csv_name),
        tally.rows,
        html_escape(csv_name),
        html_escape(&model.dir().display().to_string()),
        html_escape(&m.training.method),
        html_escape(&m.training.architecture),
        html_escape(&m.training.dataset),
        m.training.epochs,
    );
    html.push_str(&weights_html(tally));
    html.push_str(if weighted {
        "<table>\n<tr><th>class</th><th>images</th><th>per slot</th><th>mean weight</th></tr>\n"
    } else {
        "<table>\n<tr><th>class</th><th>images</th><th>per slot</th></tr>\n"
    });
    for s in sheets {
        let Some(k) = m.classes.iter().position(|c| c.name == s.class) else {
            continue;
        };
        let per: Vec<String> = model
            .hierarchy()
            .slots(k)
            .map(|j| tally.slot(j).to_string())
            .collect();
        let mean = if weighted {
            tally
                .class_mean_weight(model, k)
                .map_or("<td></td>".to_string(), |w| format!("<td>{w:.3}</td>"))
        } else {
            String::new()
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"#{0}\">{0}</a></td><td>{1}</td><td>{2}</td>{mean}</tr>",
            html_escape(&s.class),
            s.images,
            per.join(" / ")
        );
    }
    html.push_str("</table>\n");
    for s in sheets {
        let lowest = m
            .classes
            .iter()
            .position(|c| c.name == s.class)
            .map_or(String::new(), |k| lowest_html(model, tally, k));
        let _ = writeln!(
            html,
            "<section id=\"{0}\">\n<h2>{0} ({1} images)</h2>\n<a href=\"{2}\"><img src=\"{2}\" alt=\"{0}: the sub-classes MAXL found\"></a>\n{3}</section>",
            html_escape(&s.class),
            s.images,
            html_escape(&s.file),
            lowest
        );
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// The gallery folder's `index.html`.
pub fn index_path(dir: &Path) -> PathBuf {
    dir.join("index.html")
}
