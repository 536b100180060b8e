fn main() {
    let input = dsr::bench::corpus::mixed(32 << 20, 1);
    let (d, r) = dsr::bench::codec::decode_vs_reference(&input, 3).unwrap();
    println!("decode: dsr {d:.0} MB/s, reference {r:.0} MB/s, ratio {:.2}", d / r);
    for level in [6u8, 9, 12] {
        let (size, speed) = dsr::bench::codec::dsr_encode(&input, dsr_gdeflate::Level::new(level));
        println!(
            "dsr L{level}: {:.4} ratio, {speed:.1} MB/s",
            size as f64 / input.len() as f64
        );
    }
    for level in [6u8, 9, 12] {
        let (size, speed) = dsr::bench::codec::reference_encode(&input, level);
        println!(
            "ref L{level}: {:.4} ratio, {speed:.1} MB/s",
            size as f64 / input.len() as f64
        );
    }
}
