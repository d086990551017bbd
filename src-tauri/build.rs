//! Tauri build script: embeds `tauri.conf.json`, the icons and the `../ui` assets.

fn main() {
    tauri_build::build();
}
