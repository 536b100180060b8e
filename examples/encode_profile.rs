fn main() {
    let input = dsr::bench::corpus::mixed(16 << 20, 0xc0de);
    let level: u8 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    for _ in 0..3 {
        let (size, mbps) = dsr::bench::codec::dsr_encode(&input, dsr_gdeflate::Level::new(level));
        println!("L{level}: {:.4} {mbps:.1} MB/s", size as f64 / input.len() as f64);
    }
}
