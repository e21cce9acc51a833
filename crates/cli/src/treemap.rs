//! `inspect --sizes --svg FILE`: the image as a squarified treemap (Bruls, Huizing, van Wijk):
//! partitions, then what fills each (store paths, other directories, metadata, free space),
//! then each store path's largest entries. One self-contained SVG: no script, no fonts, no
//! network; every box has a `<title>` (the tooltip) and, when it fits, a visible label.

use std::fmt::Write as _;
use std::path::Path;

use imgbuild_inspect::Sizes;
use imgbuild_units::human_size;

const WIDTH: f64 = 1600.0;
const HEIGHT: f64 = 1000.0;
/// Height of a box's caption strip, when the box is big enough to have one.
const CAPTION: f64 = 16.0;
/// Store paths drawn per partition; the rest become one "other store paths" box.
const MAX_PATHS: usize = 300;

/// One box: a name, its bytes, what kind of thing it is (the CSS class), its children.
#[derive(Debug)]
struct Node {
    name: String,
    bytes: u64,
    class: &'static str,
    children: Vec<Node>,
}

impl Node {
    /// A box holding `kids` and, for the bytes they leave, one box named `rest`.
    fn with_rest(
        name: impl Into<String>,
        bytes: u64,
        class: &'static str,
        mut kids: Vec<Node>,
        rest: &str,
    ) -> Self {
        let listed: u64 = kids.iter().map(|k| k.bytes).sum();
        kids.push(Node::leaf(rest, bytes.saturating_sub(listed), "rest"));
        Node {
            name: name.into(),
            bytes,
            class,
            children: kids,
        }
    }

    fn leaf(name: impl Into<String>, bytes: u64, class: &'static str) -> Self {
        Node {
            name: name.into(),
            bytes,
            class,
            children: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// The tree of the image: disk, partitions, their contents.
fn tree(s: &Sizes) -> Node {
    let mut parts = Vec::new();
    for p in &s.partitions {
        let mut children = Vec::new();
        for c in &p.parts {
            if c.name == "closure" && p.number == s.root_partition {
                // A path's box is what only it holds; files several paths share are in
                // one box of their own, so the boxes add up to the closure.
                let paths: Vec<Node> = s
                    .store_paths
                    .iter()
                    .take(MAX_PATHS)
                    .map(|sp| {
                        let top = sp
                            .top
                            .iter()
                            .map(|t| Node::leaf(t.name.clone(), t.bytes, "dir"))
                            .collect();
                        // Its entries as parts of all it holds, drawn in what only it holds.
                        let mut n =
                            Node::with_rest(sp.name.clone(), sp.bytes, "store-path", top, "(rest)");
                        n.bytes = sp.exclusive;
                        n
                    })
                    .collect();
                children.push(Node::with_rest(
                    "closure",
                    c.bytes,
                    "closure",
                    paths,
                    "shared and other store paths",
                ));
            } else {
                children.push(Node::leaf(c.name.clone(), c.bytes, "other"));
            }
        }
        if p.number != s.root_partition {
            // The boot partition: its files themselves, then what no file holds.
            children.retain(|c| c.name == "metadata");
            children.extend(
                p.files
                    .iter()
                    .map(|f| Node::leaf(f.name.clone(), f.bytes, "file")),
            );
        }
        children.push(Node::leaf("free", p.free, "free"));
        let label = p.label.as_deref().unwrap_or(&p.kind);
        parts.push(Node {
            name: format!("{} ({label}, {})", p.number, p.kind),
            bytes: p.size,
            class: "partition",
            children,
        });
    }
    let inside: u64 = parts.iter().map(|p| p.bytes).sum();
    parts.push(Node::leaf(
        "outside partitions",
        s.disk_size.saturating_sub(inside),
        "free",
    ));
    Node {
        name: s.image.clone(),
        bytes: s.disk_size,
        class: "disk",
        children: parts,
    }
}

/// The worst aspect ratio of a row of areas laid along a side of length `side`.
fn worst(row: &[f64], side: f64) -> f64 {
    let sum: f64 = row.iter().sum();
    let (max, min) = row
        .iter()
        .fold((0.0f64, f64::INFINITY), |(a, b), &v| (a.max(v), b.min(v)));
    let s2 = sum * sum;
    let w2 = side * side;
    (w2 * max / s2).max(s2 / (w2 * min))
}

/// Squarified layout of `values` (any scale, largest first) in `r`.
fn squarify(values: &[f64], r: Rect) -> Vec<Rect> {
    let total: f64 = values.iter().sum();
    if total <= 0.0 || r.w <= 0.0 || r.h <= 0.0 {
        return vec![
            Rect {
                w: 0.0,
                h: 0.0,
                ..r
            };
            values.len()
        ];
    }
    let scale = r.w * r.h / total;
    let areas: Vec<f64> = values.iter().map(|v| v * scale).collect();
    let mut out = Vec::with_capacity(values.len());
    let mut rest = r;
    let mut i = 0;
    while i < areas.len() {
        let side = rest.w.min(rest.h);
        let mut j = i + 1;
        while j < areas.len() && worst(&areas[i..=j], side) <= worst(&areas[i..j], side) {
            j += 1;
        }
        let row = &areas[i..j];
        let sum: f64 = row.iter().sum();
        if rest.w >= rest.h {
            // A column at the left.
            let w = if rest.h > 0.0 { sum / rest.h } else { 0.0 };
            let mut y = rest.y;
            for a in row {
                let h = if w > 0.0 { a / w } else { 0.0 };
                out.push(Rect { x: rest.x, y, w, h });
                y += h;
            }
            rest = Rect {
                x: rest.x + w,
                w: (rest.w - w).max(0.0),
                ..rest
            };
        } else {
            // A row at the top.
            let h = if rest.w > 0.0 { sum / rest.w } else { 0.0 };
            let mut x = rest.x;
            for a in row {
                let w = if h > 0.0 { a / h } else { 0.0 };
                out.push(Rect { x, y: rest.y, w, h });
                x += w;
            }
            rest = Rect {
                y: rest.y + h,
                h: (rest.h - h).max(0.0),
                ..rest
            };
        }
        i = j;
    }
    out
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            c if c.is_control() => "?".into(),
            c => c.to_string(),
        })
        .collect()
}

/// A stable hue per name, so the same store path has the same colour in every picture.
fn hue(name: &str) -> u32 {
    name.bytes().fold(2166136261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16777619)
    }) % 360
}

fn fill(n: &Node, depth: usize) -> String {
    match n.class {
        "free" => "#f4f4f4".into(),
        "disk" => "#ffffff".into(),
        "partition" => "#dde3ea".into(),
        "closure" | "files" => "#e8edf2".into(),
        "metadata" | "other" | "rest" => "#c9c9c9".into(),
        _ => format!("hsl({}, 55%, {}%)", hue(&n.name), 62 + 8 * depth.min(3)),
    }
}

fn draw(out: &mut String, n: &Node, r: Rect, depth: usize) {
    if r.w < 0.5 || r.h < 0.5 || n.bytes == 0 {
        return;
    }
    let title = format!("{} — {}", n.name, human_size(n.bytes));
    let _ = write!(
        out,
        r##"<g class="{}"><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}" stroke="#555" stroke-width="0.5"><title>{}</title></rect>"##,
        n.class,
        r.x,
        r.y,
        r.w,
        r.h,
        fill(n, depth),
        escape(&title)
    );
    let captioned = r.h >= 2.0 * CAPTION && r.w >= 40.0;
    if captioned || (r.h >= 12.0 && r.w >= 40.0) {
        // About 6.5 px per character at 11 px.
        let room = ((r.w - 6.0) / 6.5).max(0.0) as usize;
        let mut label = format!("{} {}", n.name, human_size(n.bytes));
        if label.chars().count() > room {
            label = label
                .chars()
                .take(room.saturating_sub(1))
                .collect::<String>()
                + "…";
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{:.1}" font-family="sans-serif" font-size="11">{}</text>"#,
            r.x + 3.0,
            r.y + 12.0,
            escape(&label)
        );
    }
    out.push_str("</g>\n");
    if n.children.is_empty() {
        return;
    }
    let inner = if captioned {
        Rect {
            x: r.x + 2.0,
            y: r.y + CAPTION,
            w: (r.w - 4.0).max(0.0),
            h: (r.h - CAPTION - 2.0).max(0.0),
        }
    } else {
        r
    };
    let mut kids: Vec<&Node> = n.children.iter().filter(|c| c.bytes > 0).collect();
    kids.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.name.cmp(&b.name)));
    // Children fill the parent in proportion to their bytes; when they add up to less than
    // the parent (a shared file drawn elsewhere), the remainder stays empty.
    let sum: u64 = kids.iter().map(|k| k.bytes).sum();
    let scale = if sum > n.bytes && sum > 0 {
        1.0
    } else {
        sum as f64 / n.bytes as f64
    };
    let area = Rect {
        h: inner.h * scale.clamp(0.0, 1.0),
        ..inner
    };
    let values: Vec<f64> = kids.iter().map(|k| k.bytes as f64).collect();
    for (k, kr) in kids.iter().zip(squarify(&values, area)) {
        draw(out, k, kr, depth + 1);
    }
}

/// The SVG text of the treemap of `s`.
pub fn svg(s: &Sizes) -> String {
    let root = tree(s);
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{}" viewBox="0 0 {WIDTH} {}">
<title>{}</title>
<text x="4" y="16" font-family="sans-serif" font-size="14">{}</text>
"#,
        HEIGHT + 24.0,
        HEIGHT + 24.0,
        escape(&s.image),
        escape(&format!(
            "{}: disk {}, closure {} in {} store paths",
            s.image,
            human_size(s.disk_size),
            human_size(s.closure_total),
            s.store_paths.len()
        ))
    );
    draw(
        &mut out,
        &root,
        Rect {
            x: 0.0,
            y: 24.0,
            w: WIDTH,
            h: HEIGHT,
        },
        0,
    );
    out.push_str("</svg>\n");
    out
}

/// Writes the treemap to `path` (through `path.tmp`, renamed when complete).
pub fn write_svg(s: &Sizes, path: &Path) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, svg(s))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squarify_fills_the_rectangle_without_overlap() {
        let values = [6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0];
        let r = Rect {
            x: 0.0,
            y: 0.0,
            w: 6.0,
            h: 4.0,
        };
        let rs = squarify(&values, r);
        let area: f64 = rs.iter().map(|q| q.w * q.h).sum();
        assert!((area - 24.0).abs() < 1e-9);
        for (v, q) in values.iter().zip(&rs) {
            assert!((q.w * q.h - v).abs() < 1e-9, "{q:?}");
            assert!(q.x >= -1e-9 && q.y >= -1e-9 && q.x + q.w <= 6.0 + 1e-9);
            assert!(q.y + q.h <= 4.0 + 1e-9);
        }
        for (i, a) in rs.iter().enumerate() {
            for b in &rs[i + 1..] {
                let ox = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
                let oy = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
                assert!(ox <= 1e-9 || oy <= 1e-9, "{a:?} {b:?}");
            }
        }
        // The paper's example: the first row holds the two 6s, stacked.
        assert_eq!((rs[0].w, rs[1].w), (3.0, 3.0));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
