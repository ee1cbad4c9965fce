fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let kind = std::env::args().nth(2).unwrap();
    let sql = match kind.as_str() {
        "idents" => format!("select {}a", "a+".repeat(n)),
        "parens" => format!("select {}1{}", "(".repeat(n), ")".repeat(n)),
        "or" => format!("select 1 where {}true", "a=1 or ".repeat(n)),
        _ => format!("select 1 where 1 in ({}1)", "1,".repeat(n)),
    };
    let h = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let c = pgsplit::classify::Classifier::new(Default::default());
            let t = std::time::Instant::now();
            let cl = c.classify(sql.as_bytes());
            println!(
                "{kind} n={n} len={} {:?} {:?}",
                sql.len(),
                cl.class,
                t.elapsed()
            );
        })
        .unwrap();
    let _ = h.join();
}
