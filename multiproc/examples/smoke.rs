use multiproc::{Process, StartMethod};
fn hello(name: String) -> String { format!("hello {name} from {}", std::process::id()) }
fn main() {
    multiproc::init();
    for m in StartMethod::ALL {
        let t = std::time::Instant::now();
        let mut p = Process::builder().start_method(m).start(hello, "x".to_string()).unwrap();
        let r = p.join();
        println!("{m}: {r:?} {:?} {:?}", p.exit_status(), t.elapsed());
        let mut p = Process::builder().start_method(m).start(|()| -> u32 { panic!("boom") }, ()).unwrap();
        println!("{m}: {:?}", p.join());
    }
}
