//! SVG charts of the bench report, written beside `bench.md` and embedded in it. They are
//! drawn from the report's JSON (what `bench.json` holds) by a pure function, [`render`]: a
//! section the run did not measure gives no chart.
//!
//! plotters with its SVG backend only: text goes into the SVG as `<text>` (the viewer's
//! sans-serif font draws it) and plotters only estimates its width, so no font files or
//! system libraries are needed.

use std::{fmt::Write as _, path::Path};

use plotters::{
    coord::Shift,
    element::DashedPathElement,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};
use serde_json::Value;

use super::{
    flood::{FloodVariant, Generator},
    kernel::{Case, XDP_EMPTY},
    traffic::Placement,
};
use cns_agent::datapath::{PROG_EMPTY, PROG_TO_POD, PROG_XDP};

/// Where in the report a chart goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Kernel,
    Traffic,
    Flood,
    Control,
}

pub struct Chart {
    pub section: Section,
    /// File name, beside `bench.md`.
    pub file: &'static str,
    /// What it shows (the image's alt text and caption).
    pub caption: String,
    pub svg: String,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Res = Result<(), Box<dyn std::error::Error>>;

const GREY: RGBColor = RGBColor(120, 120, 120);
const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const BROWN: RGBColor = RGBColor(140, 86, 75);
const PALETTE: [RGBColor; 6] = [BLUE, ORANGE, GREEN, RED, PURPLE, BROWN];
const FONT: &str = "sans-serif";

/// Every chart the report's data allows, in report order.
pub fn render(report: &Value) -> Vec<Chart> {
    [
        kernel_chart(report),
        latency_chart(report),
        flood_chart(report),
        control_chart(report),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Writes the charts into `dir`.
pub fn write(dir: &Path, charts: &[Chart]) -> std::io::Result<()> {
    for c in charts {
        std::fs::write(dir.join(c.file), &c.svg)?;
    }
    Ok(())
}

/// The markdown that shows the charts of `section` (relative links: the files sit beside it).
pub fn embed(s: &mut String, charts: &[Chart], section: Section) {
    for c in charts.iter().filter(|c| c.section == section) {
        let _ = writeln!(s, "![{0}]({1})\n\n*{0}*\n", c.caption, c.file);
    }
}

#[derive(Clone, Copy, Debug)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(v: &Value) -> Option<Stat> {
    Some(Stat {
        median: v["median"].as_f64()?,
        min: v["min"].as_f64()?,
        max: v["max"].as_f64()?,
    })
}

fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Res) -> Option<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).ok()?;
        if let Err(e) = draw(&root) {
            eprintln!("bench charts: {e}");
            return None;
        }
        root.present().ok()?;
    }
    Some(buf)
}

/// 10 -> "10", 2000 -> "2k", 50000 -> "50k", 1e6 -> "1M".
fn si(x: f64) -> String {
    let (v, unit) = if x >= 1e6 {
        (x / 1e6, "M")
    } else if x >= 1e3 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v >= 10.0 || v.fract().abs() < 1e-9 {
        0
    } else {
        1
    };
    format!("{v:.digits$}{unit}")
}

struct Line {
    name: String,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// Each line with markers on `c` (log or linear axes alike).
fn draw_lines<'a, CT>(c: &mut ChartContext<'a, SVGBackend<'a>, CT>, lines: &[Line]) -> Res
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    for l in lines {
        let style = l.color.stroke_width(2);
        if l.dashed {
            c.draw_series(DashedLineSeries::new(l.points.clone(), 6, 4, style))?;
        } else {
            c.draw_series(LineSeries::new(l.points.clone(), style))?;
        }
        c.draw_series(
            l.points
                .iter()
                .map(|&p| Circle::new(p, 3, l.color.filled())),
        )?;
    }
    Ok(())
}

/// One panel of lines with markers, log x; log y when `log_y`.
fn line_panel(
    area: &Area,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
    log_y: bool,
) -> Res {
    let pts = || lines.iter().flat_map(|l| l.points.iter().copied());
    let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = pts().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| (a.min(y), b.max(y)));
    let x = (x0 / 2.0)..(x1 * 2.0);
    let mut b = ChartBuilder::on(area);
    b.caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60);
    if log_y {
        let mut c =
            b.build_cartesian_2d(x.log_scale(), ((y0 / 2.0).max(1e-3)..y1 * 2.0).log_scale())?;
        c.configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| si(*v))
            .draw()?;
        draw_lines(&mut c, lines)?;
    } else {
        let mut c = b.build_cartesian_2d(x.log_scale(), 0.0..(y1 * 1.1).max(1.0))?;
        c.configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| num(*v))
            .draw()?;
        draw_lines(&mut c, lines)?;
    }
    Ok(())
}

/// The series names and styles, drawn in their own area (legends inside a panel hide lines).
fn legend(area: &Area, lines: &[&Line]) -> Res {
    for (i, l) in lines.iter().enumerate() {
        let y = 50 + 24 * i as i32;
        let style = l.color.stroke_width(2);
        if l.dashed {
            area.draw(&DashedPathElement::new(vec![(8, y), (40, y)], 6, 4, style))?;
        } else {
            area.draw(&PathElement::new(vec![(8, y), (40, y)], style))?;
        }
        area.draw(&Circle::new((24, y), 3, l.color.filled()))?;
        area.draw(&Text::new(l.name.clone(), (48, y - 8), (FONT, 14)))?;
    }
    Ok(())
}

/// Horizontal bars (median) with min-max whiskers, one row per entry, top to bottom; the
/// row names are drawn when `label_width` > 0.
fn bar_panel(
    area: &Area,
    title: &str,
    x_desc: &str,
    rows: &[(String, RGBColor, Stat)],
    label_width: u32,
) -> Res {
    let n = rows.len();
    let top = rows.iter().map(|r| r.2.max).fold(0.0, f64::max).max(1e-9) * 1.1;
    // Row i spans y in [n-1-i, n-i] so that the first row is at the top.
    let y = |i: usize| (n - 1 - i) as f64;
    let mut c = ChartBuilder::on(area)
        .caption(title, (FONT, 16))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(label_width.max(10))
        .build_cartesian_2d(0.0..top, 0.0..n as f64)?;
    c.configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|v| num(*v))
        .x_desc(x_desc)
        .draw()?;
    // The row names, right-aligned left of the axis (plotters' own labels would sit at its
    // round-number key points, not at the rows).
    if label_width > 0 {
        let (bx, by) = area.get_base_pixel();
        let style =
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, r) in rows.iter().enumerate() {
            let (px, py) = c.backend_coord(&(0.0, y(i) + 0.5));
            area.draw(&Text::new(
                r.0.clone(),
                (px - bx - 8, py - by),
                style.clone(),
            ))?;
        }
    }
    c.draw_series(rows.iter().enumerate().map(|(i, (_, color, s))| {
        Rectangle::new(
            [(0.0, y(i) + 0.15), (s.median, y(i) + 0.85)],
            color.mix(0.8).filled(),
        )
    }))?;
    c.draw_series(rows.iter().enumerate().map(|(i, (_, _, s))| {
        PathElement::new(
            vec![(s.min, y(i) + 0.5), (s.max, y(i) + 0.5)],
            BLACK.stroke_width(1),
        )
    }))?;
    c.draw_series(rows.iter().enumerate().map(|(i, (_, _, s))| {
        EmptyElement::at((s.max, y(i) + 0.5))
            + Text::new(num(s.median), (5, -6), (FONT, 12).into_font())
    }))?;
    Ok(())
}

/// Axis and bar numbers: no decimals from 10 on or for whole numbers.
fn num(v: f64) -> String {
    if v.abs() >= 10.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Per-packet cost against policy-map entries: `cns_to_pod` and `cns_xdp` per case, with
/// their empty-program floors; a panel per key pattern.
fn kernel_chart(report: &Value) -> Option<Chart> {
    let results = report["kernel"]["results"].as_array()?;
    fn row(r: &Value) -> Option<(f64, f64, &str, &str, &str, f64)> {
        Some((
            r["policy_entries"].as_f64()?,
            r["ipcache_entries"].as_f64()?,
            r["program"].as_str()?,
            r["case"].as_str()?,
            r["keys"].as_str()?,
            stat(&r["ns_per_packet"])?.median,
        ))
    }
    // IPv4's rows on the NetworkPolicy-only datapath (the IPv6 ones and those with
    // ClusterNetworkPolicies or dry-run policies have tables of their own).
    let rows: Vec<_> = results
        .iter()
        .filter(|r| r["family"].as_str() != Some("IPv6"))
        .filter(|r| r["cluster_policies"] != true && r["dry_run"] != true)
        .filter_map(row)
        .collect();
    // Each policy size at the largest IP cache measured with it.
    let ipcache_for = |p: f64| {
        rows.iter()
            .filter(|r| r.0 == p)
            .map(|r| r.1)
            .fold(0.0, f64::max)
    };
    let series = [
        (PROG_TO_POD, Case::Established, BLUE, false),
        (PROG_TO_POD, Case::NewAllowed, GREEN, false),
        (PROG_TO_POD, Case::NewDenied, RED, false),
        (PROG_EMPTY, Case::Empty, GREY, false),
        (PROG_XDP, Case::Established, BLUE, true),
        (PROG_XDP, Case::NewAllowed, GREEN, true),
        (PROG_XDP, Case::NewDenied, RED, true),
        (XDP_EMPTY, Case::Empty, GREY, true),
    ];
    let panels: Vec<(&str, Vec<Line>)> = ["repeated", "random"]
        .into_iter()
        .map(|keys| {
            let lines = series
                .iter()
                .map(|&(program, case, color, dashed)| {
                    let mut points: Vec<(f64, f64)> = rows
                        .iter()
                        .filter(|r| {
                            r.2 == program
                                && r.3 == case.name()
                                && r.4 == keys
                                && r.1 == ipcache_for(r.0)
                        })
                        .map(|r| (r.0, r.5))
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let name = match (program, case) {
                        (PROG_EMPTY, _) => "empty TC program (floor)".to_owned(),
                        (XDP_EMPTY, _) => "empty XDP program (floor)".to_owned(),
                        _ => format!("{program} {}", case.name()),
                    };
                    Line {
                        name,
                        color,
                        dashed,
                        points,
                    }
                })
                .filter(|l| !l.points.is_empty())
                .collect::<Vec<_>>();
            (keys, lines)
        })
        .filter(|(_, lines)| !lines.is_empty())
        .collect();
    if panels.is_empty() {
        return None;
    }
    let svg = svg((1200, 460), |root| {
        let (plots, key) = root.split_horizontally(1200 - 260);
        let areas = plots.split_evenly((1, panels.len()));
        for ((keys, lines), area) in panels.iter().zip(&areas) {
            line_panel(
                area,
                &format!("{keys} keys"),
                ("policy-map entries", "ns per packet (median)"),
                lines,
                false,
            )?;
        }
        // The legend of the panel with the most series.
        let most = panels.iter().max_by_key(|p| p.1.len()).map(|p| &p.1);
        legend(&key, &most.into_iter().flatten().collect::<Vec<_>>())
    })?;
    Some(Chart {
        section: Section::Kernel,
        file: "bench-kernel.svg",
        caption: "Per-packet cost (ns, median) against policy-map entries: cns_to_pod (TC, solid) \
                  and cns_xdp (XDP, dashed) per case, with the empty programs as floors; each \
                  policy size at the largest IP cache measured with it"
            .into(),
        svg,
    })
}

fn variant_color(name: &str) -> RGBColor {
    if name.starts_with("iptables") {
        ORANGE
    } else if name.contains("XDP on the uplink") {
        GREEN
    } else if name.starts_with("cns") {
        BLUE
    } else {
        GREY
    }
}

/// Request/response latency p50 and p99 per traffic variant: a bar per placement (same and
/// cross vCPU, when measured), or one per variant for reports from before the placements
/// (`rr_p50_us`).
fn latency_chart(report: &Value) -> Option<Chart> {
    let results = report["traffic"]["results"].as_array()?;
    let rows = |q: &str| -> Vec<(String, RGBColor, Stat)> {
        let mut rows = Vec::new();
        for r in results {
            let Some(name) = r["variant"].as_str() else {
                continue;
            };
            if let Some(old) = stat(&r[format!("rr_{q}_us")]) {
                rows.push((name.to_owned(), variant_color(name), old));
            }
            for p in Placement::ALL {
                if let Some(x) = stat(&r[format!("rr_{}_{q}_us", p.key())]) {
                    rows.push((format!("{name}, {}", p.name()), variant_color(name), x));
                }
            }
        }
        rows
    };
    let (p50, p99) = (rows("p50"), rows("p99"));
    if p50.is_empty() || p99.is_empty() {
        return None;
    }
    let svg = svg((1200, 80 + 38 * p50.len() as u32), |root| {
        let (left, right) = root.split_horizontally(680);
        bar_panel(&left, "request/response p50", "µs", &p50, 330)?;
        bar_panel(&right, "request/response p99", "µs", &p99, 0)
    })?;
    Some(Chart {
        section: Section::Traffic,
        file: "bench-latency.svg",
        caption: "TCP request/response latency between two pods (µs), client and server threads \
                  pinned to the same vCPU and to two vCPUs: bars are the median over trials, \
                  whiskers min-max"
            .into(),
        svg,
    })
}

/// The denied flood from outside the node: ns per frame in the generator's loop (live frames).
fn flood_chart(report: &Value) -> Option<Chart> {
    let results = report["traffic"]["uplink_flood"]["results"].as_array()?;
    let order = [
        FloodVariant::None,
        FloodVariant::Iptables,
        FloodVariant::Tc,
        FloodVariant::Xdp,
        FloodVariant::XdpDropFloor,
    ];
    let rows: Vec<(String, RGBColor, Stat)> = order
        .iter()
        .filter_map(|v| {
            let r = results.iter().find(|r| {
                r["variant"] == v.name() && r["generator"] == Generator::LiveFrames.name()
            })?;
            Some((
                v.name().to_owned(),
                variant_color(v.name()),
                stat(&r["generator_loop_ns_per_frame"])?,
            ))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let svg = svg((900, 80 + 50 * rows.len() as u32), |root| {
        bar_panel(
            root,
            "denied UDP flood from outside the node (XDP live frames)",
            "ns per frame, generator + node on one CPU (lower is better)",
            &rows,
            330,
        )
    })?;
    Some(Chart {
        section: Section::Flood,
        file: "bench-flood.svg",
        caption: "Denied flood from outside the node: kernel time per frame in the generator's \
                  loop (ns; bars median, whiskers min-max; lower is better)"
            .into(),
        svg,
    })
}

/// Single-change latency (p50, log scale) against cluster size, per change kind and mix.
fn control_chart(report: &Value) -> Option<Chart> {
    let inc = report["control_plane"]["incremental"].as_array()?;
    let mut changes: Vec<&str> = Vec::new();
    let mut mixes: Vec<&str> = Vec::new();
    let mut lines: Vec<Line> = Vec::new();
    for i in inc {
        let (Some(change), Some(mix), Some(pods), Some(p50)) = (
            i["change"].as_str(),
            i["mix"].as_str(),
            i["pods"].as_f64(),
            i["total_p50_ms"].as_f64(),
        ) else {
            continue;
        };
        if !changes.contains(&change) {
            changes.push(change);
        }
        if !mixes.contains(&mix) {
            mixes.push(mix);
        }
        let name = format!("{change} ({mix})");
        match lines.iter_mut().find(|l| l.name == name) {
            Some(l) => l.points.push((pods, p50)),
            None => lines.push(Line {
                color: PALETTE[changes.iter().position(|c| *c == change)? % PALETTE.len()],
                dashed: mixes.iter().position(|m| *m == mix)? % 2 == 1,
                name,
                points: vec![(pods, p50)],
            }),
        }
    }
    if lines.is_empty() {
        return None;
    }
    for l in &mut lines {
        l.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let svg = svg((1100, 460), |root| {
        let (plot, key) = root.split_horizontally(1100 - 330);
        line_panel(
            &plot,
            "single change, source event to maps updated",
            ("pods in the cluster", "ms (p50)"),
            &lines,
            true,
        )?;
        legend(&key, &lines.iter().collect::<Vec<_>>())
    })?;
    Some(Chart {
        section: Section::Control,
        file: "bench-control.svg",
        caption:
            "Control plane: one change, end to end (ms, p50, log scale) against cluster size, \
                  per change kind and cluster mix"
                .into(),
        svg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(median: f64) -> Value {
        json!({"median": median, "min": median * 0.9, "max": median * 1.2, "trials": 3})
    }

    fn kernel_row(policy: u64, ipcache: u64, program: &str, case: Case, ns: f64) -> Value {
        json!({
            "policy_entries": policy, "ipcache_entries": ipcache, "program": program,
            "case": case.name(), "keys": "repeated", "ns_per_packet": s(ns),
        })
    }

    fn full() -> Value {
        let mut kernel = Vec::new();
        for (p, ipc) in [(10, 10), (100_000, 50_000)] {
            kernel.push(kernel_row(p, ipc, PROG_EMPTY, Case::Empty, 10.0));
            kernel.push(kernel_row(p, ipc, PROG_TO_POD, Case::Established, 70.0));
            kernel.push(kernel_row(p, ipc, PROG_TO_POD, Case::NewDenied, 150.0));
            kernel.push(kernel_row(p, ipc, PROG_XDP, Case::NewDenied, 120.0));
            // The other datapaths' rows are not drawn.
            for other in ["cluster_policies", "dry_run"] {
                let mut r = kernel_row(p, ipc, PROG_TO_POD, Case::NewAllowed, 90.0);
                r[other] = json!(true);
                kernel.push(r);
            }
        }
        json!({
            "kernel": {"results": kernel},
            "traffic": {
                "results": [
                    {"variant": "no enforcement", "rr_p50_us": s(13.0), "rr_p99_us": s(48.0)},
                    {"variant": "cns, 10 unrelated rules", "rr_p50_us": s(14.0), "rr_p99_us": s(50.0)},
                    {"variant": "iptables+ipset, 1000 unrelated rules", "rr_p50_us": s(20.0), "rr_p99_us": s(90.0)},
                ],
                "uplink_flood": {"results": [
                    {"variant": FloodVariant::Xdp.name(), "generator": Generator::LiveFrames.name(),
                     "generator_loop_ns_per_frame": s(370.0)},
                    {"variant": FloodVariant::Tc.name(), "generator": Generator::LiveFrames.name(),
                     "generator_loop_ns_per_frame": s(800.0)},
                    {"variant": FloodVariant::Tc.name(), "generator": Generator::Sockets.name(),
                     "generator_loop_ns_per_frame": null},
                ]},
            },
            "control_plane": {"incremental": [
                {"change": "one policy edited", "mix": "label-heavy", "pods": 1000, "total_p50_ms": 16.0},
                {"change": "one policy edited", "mix": "label-heavy", "pods": 50000, "total_p50_ms": 2600.0},
                {"change": "one pod added (local)", "mix": "cidr-heavy", "pods": 10000, "total_p50_ms": 240.0},
            ]},
        })
    }

    fn valid_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        // Text is escaped (variant names have quotes and '+').
        assert!(!svg.contains("pod's"), "unescaped apostrophe");
    }

    #[test]
    fn every_section_gives_its_chart_with_its_series() {
        let charts = render(&full());
        let files: Vec<_> = charts.iter().map(|c| c.file).collect();
        assert_eq!(
            files,
            [
                "bench-kernel.svg",
                "bench-latency.svg",
                "bench-flood.svg",
                "bench-control.svg"
            ]
        );
        for c in &charts {
            valid_svg(&c.svg);
        }
        let kernel = &charts[0].svg;
        for name in [
            "cns_to_pod established",
            "cns_to_pod new denied",
            "cns_xdp new denied",
            "empty TC program (floor)",
            "repeated keys",
        ] {
            assert!(kernel.contains(name), "kernel chart lacks {name}");
        }
        // Nothing measured, nothing drawn (new allowed only on the other datapaths).
        assert!(!kernel.contains("new allowed"));
        assert!(!kernel.contains("random keys"));
        assert!(!kernel.contains("empty XDP program"));
        for name in [
            "no enforcement",
            "cns, 10 unrelated rules",
            "iptables+ipset, 1000 unrelated rules",
            "p99",
        ] {
            assert!(charts[1].svg.contains(name), "latency chart lacks {name}");
        }
        assert!(charts[2].svg.contains("cns, XDP on the uplink (default)"));
        assert!(charts[2].svg.contains("on the pod&apos;s veth"));
        assert!(!charts[2].svg.contains("floor: bare"));
        for name in [
            "one policy edited (label-heavy)",
            "one pod added (local) (cidr-heavy)",
        ] {
            assert!(charts[3].svg.contains(name), "control chart lacks {name}");
        }
    }

    #[test]
    fn missing_sections_are_skipped() {
        assert!(render(&json!({})).is_empty());
        let mut only_control = full();
        only_control["kernel"] = Value::Null;
        only_control["traffic"] = Value::Null;
        let charts = render(&only_control);
        assert_eq!(charts.len(), 1);
        assert_eq!(charts[0].section, Section::Control);
        // Traffic without the flood from outside, and the flood alone.
        let mut v = full();
        v["traffic"]["uplink_flood"] = Value::Null;
        v["traffic"]["results"] = json!([]);
        assert!(
            render(&v)
                .iter()
                .all(|c| !matches!(c.section, Section::Traffic | Section::Flood))
        );
    }

    #[test]
    fn embed_links_the_files_of_a_section() {
        let charts = render(&full());
        let mut md = String::new();
        embed(&mut md, &charts, Section::Traffic);
        assert!(md.starts_with("![TCP request/response latency"));
        assert!(md.contains("](bench-latency.svg)"));
        assert!(!md.contains("bench-kernel.svg"));
    }

    #[test]
    fn the_committed_full_report_gives_every_chart() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/benchmarks.json");
        let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let charts = render(&data);
        assert_eq!(charts.len(), 4);
        for c in &charts {
            valid_svg(&c.svg);
            assert!(c.svg.len() < 200_000, "{} is {} bytes", c.file, c.svg.len());
        }
        assert!(charts[0].svg.contains("random keys"));
        assert!(charts[0].svg.contains("empty XDP program (floor)"));
        assert!(
            charts[1]
                .svg
                .contains("iptables+ipset, 1000 unrelated rules")
        );
    }

    #[test]
    fn si_labels() {
        assert_eq!(si(10.0), "10");
        assert_eq!(si(1000.0), "1k");
        assert_eq!(si(2500.0), "2.5k");
        assert_eq!(si(100_000.0), "100k");
    }
}
