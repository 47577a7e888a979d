//! tokio file server for the sendfile benchmark (bench/sendfile.sh): the
//! usual tokio way, `tokio::io::copy` from a `tokio::fs::File` (read on
//! tokio's blocking pool, written by the runtime's one thread). Answers
//! every HTTP/1.1 request head with the whole file (`Content-Length`,
//! keep-alive), as sloop's `examples/file_server.rs` does.
//!
//!     ref-tokio-file --port N --file PATH

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

async fn serve(stream: TcpStream, path: std::sync::Arc<String>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    loop {
        // One request head, through the empty line.
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
        }
        let file = tokio::fs::File::open(path.as_str()).await?;
        let len = file.metadata().await?.len();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\nConnection: keep-alive\r\n\r\n"
        );
        write.write_all(head.as_bytes()).await?;
        tokio::io::copy(&mut file.take(len), &mut write).await?;
    }
}

fn main() {
    let usage = "usage: ref-tokio-file --port N --file PATH";
    let (addr, extra) = bench_refs::server_args("ref-tokio-file", &["--file"], usage);
    let path = std::sync::Arc::new(extra[0].clone());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async move {
            let listener = TcpListener::bind(addr).await.expect("bind");
            eprintln!("listening on {addr}");
            loop {
                let (s, _) = listener.accept().await.expect("accept");
                let _ = s.set_nodelay(true);
                tokio::spawn(serve(s, path.clone()));
            }
        });
}
