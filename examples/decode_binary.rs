fn main() {
    let input = dsr::bench::corpus::mixed(8 << 20, 1);
    // The binary segments only: pieces 1, 6, 11, ... of 256 KiB.
    let part: Vec<u8> = input.chunks(256 << 10).skip(1).step_by(5).flatten().copied().collect();
    let mut c = dsr_gdeflate_reference::Compressor::new(9);
    let tiles = dsr::bench::codec::Tiles::new(&part, |t| c.compress_tile(t));
    let mut out = vec![0u8; part.len()];
    let start = std::time::Instant::now();
    let mut total = std::time::Duration::ZERO;
    let mut runs = 0;
    while start.elapsed().as_secs_f64() < 3.0 {
        total += dsr::bench::codec::dsr_decode(&tiles, &mut out).unwrap();
        runs += 1;
    }
    println!(
        "binary {} KiB: {:.0} MB/s",
        part.len() >> 10,
        runs as f64 * part.len() as f64 / total.as_secs_f64() / 1e6
    );
}
