//! `aiwan bench tui`: how long the operator dashboard takes to draw one
//! frame of each view from a snapshot of 2,000 links (with their history)
//! and 500 jobs, against the 16 ms of a 60 Hz frame.

/// Arguments of `aiwan bench tui`.
#[derive(Debug, clap::Args)]
pub struct BenchTuiArgs {
    #[arg(long, default_value_t = 2000)]
    pub links: usize,
    #[arg(long, default_value_t = 500)]
    pub jobs: usize,
    /// Terminal size.
    #[arg(long, default_value_t = 200)]
    pub width: u16,
    #[arg(long, default_value_t = 50)]
    pub height: u16,
    /// Frames drawn per view (the median counts).
    #[arg(long, default_value_t = 50)]
    pub frames: usize,
    /// Print one JSON document (the output is JSON either way).
    #[arg(long)]
    pub json: bool,
}

/// The frame budget the figures are compared with.
const BUDGET_MS: f64 = 16.0;

pub fn bench_tui(args: &BenchTuiArgs) -> anyhow::Result<()> {
    let snapshot = aiwan_ui::fixtures::large(args.links, args.jobs);
    let views: Vec<serde_json::Value> =
        aiwan_ui::bench_frames(&snapshot, args.width, args.height, args.frames)
            .into_iter()
            .map(|(view, ms)| {
                serde_json::json!({
                    "view": view,
                    "frame_ms": ms,
                    "share_of_16ms": ms / BUDGET_MS,
                })
            })
            .collect();
    let worst = views
        .iter()
        .filter_map(|v| v["frame_ms"].as_f64())
        .fold(0.0, f64::max);
    let report = serde_json::json!({
        "links": args.links,
        "jobs": args.jobs,
        "width": args.width,
        "height": args.height,
        "frames": args.frames,
        "views": views,
        "worst_frame_ms": worst,
        "worst_share_of_16ms": worst / BUDGET_MS,
    });
    crate::client::print_out(&format!("{}\n", serde_json::to_string_pretty(&report)?))
}
