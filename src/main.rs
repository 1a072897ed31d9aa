use clap::Parser;
use sam2_tui::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Segment(a)) => sam2_tui::cli::segment::run(a),
        Some(Command::Batch(a)) => sam2_tui::cli::batch::run(a),
        Some(Command::Bench(a)) => sam2_tui::cli::bench::run(a),
        Some(Command::Doctor(a)) => sam2_tui::cli::doctor::run(a),
        Some(Command::Sessions(a)) => sam2_tui::cli::sessions::run(a),
        Some(Command::Weights(c)) => sam2_tui::cli::weights::run(c),
        Some(Command::Preview(a)) => sam2_tui::cli::preview::run(a),
        Some(Command::Serve(a)) => sam2_tui::cli::serve::run(a),
        Some(Command::Engine(a)) => sam2_tui::cli::engine::run(a),
        None => sam2_tui::console::run(cli.input, cli.console),
    };
    if let Err(e) = result {
        // One line: the error and its causes, so scripts can grep it.
        eprintln!("sam2-tui: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(sam2_tui::util::exit::code_of(&e));
    }
}
