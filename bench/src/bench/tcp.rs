//! (g) Plain TCP over loopback: the physical reference.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

/// Send `bytes` in 64 KiB writes over 127.0.0.1; MiB/s measured at the receiver.
pub fn run(bytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let buf = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            stream.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    let (mut stream, _) = listener.accept()?;
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            anyhow::bail!("TCP stream ended after {got} of {bytes} bytes");
        }
        got += n as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("TCP writer panicked"))??;
    Ok(bytes as f64 / (1024.0 * 1024.0) / secs)
}
