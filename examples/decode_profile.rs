fn main() {
    let input = dsr::bench::corpus::mixed(32 << 20, 1);
    let mut c = dsr_gdeflate_reference::Compressor::new(9);
    let tiles = dsr::bench::codec::Tiles::new(&input, |t| c.compress_tile(t));
    let mut out = vec![0u8; input.len()];
    let mut total = std::time::Duration::ZERO;
    for _ in 0..10 {
        total += dsr::bench::codec::dsr_decode(&tiles, &mut out).unwrap();
    }
    println!("{:.0} MB/s", 10.0 * input.len() as f64 / total.as_secs_f64() / 1e6);
    // Per kind of data.
    for (name, range) in [
        ("text", 0..256 << 10),
        ("binary", 256 << 10..512 << 10),
        ("media", 512 << 10..768 << 10),
        ("random", 768 << 10..1024 << 10),
        ("zeros", 1024 << 10..1280 << 10),
    ] {
        let part = &input[range];
        let t = dsr::bench::codec::Tiles::new(part, |x| c.compress_tile(x));
        let mut o = vec![0u8; part.len()];
        let mut tt = std::time::Duration::ZERO;
        for _ in 0..50 {
            tt += dsr::bench::codec::dsr_decode(&t, &mut o).unwrap();
        }
        println!(
            "{name}: {:.0} MB/s (ratio {:.2})",
            50.0 * part.len() as f64 / tt.as_secs_f64() / 1e6,
            t.compressed() as f64 / part.len() as f64
        );
    }
}
