//! Load generator for ringyard. The performance issue grows this into pull/push/seed/compare
//! workloads; for now it only reports that it is a placeholder binary for the workspace member.
fn main() {
    eprintln!("loadtest: workloads arrive with the performance issue; nothing to run yet");
    std::process::exit(2);
}
