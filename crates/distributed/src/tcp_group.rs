//! The ranks' meeting point over TCP: rank 0 listens at `MASTER_ADDR:MASTER_PORT`, every other
//! rank connects to it. It hands NCCL its unique id on GPUs, and on CPU ranks it is the
//! collective itself: rank 0 sums everyone's vector in rank order and sends the sum back. That
//! star costs two copies of the vector per rank through rank 0, which is fine for the small
//! adapter gradients of CPU test runs; GPUs use NCCL.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::collective::{Collective, CollectiveError};
use crate::rank_env::RankEnv;

/// How often a rank retries connecting while rank 0 is not yet listening.
const RETRY: Duration = Duration::from_millis(100);
/// A rank's greeting: its rank and the world size, as two u32.
const HELLO_BYTES: usize = 8;
/// How long a connecting process has to say which rank it is.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest broadcast (an NCCL unique id is 128 bytes).
const BROADCAST_LIMIT: usize = 4096;

pub struct TcpGroup {
    rank: usize,
    world_size: usize,
    /// Rank 0: the streams of ranks 1, 2, … in order. Other ranks: the stream to rank 0.
    peers: Vec<TcpStream>,
}

fn lost(what: &'static str, source: std::io::Error) -> CollectiveError {
    CollectiveError::Lost { what, source }
}

fn send(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(&(bytes.len() as u64).to_le_bytes())?;
    stream.write_all(bytes)
}

/// A message of at most `limit` bytes: anything else listening on the port is not a rank, and
/// must not make this one allocate what it claims to send.
fn receive(stream: &mut TcpStream, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > limit as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a message of {len} bytes where at most {limit} were expected"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes)?;
    Ok(bytes)
}

impl TcpGroup {
    /// Meets the other ranks of `env`'s job, waiting up to `timeout` for all of them.
    pub fn join(env: &RankEnv, timeout: Duration) -> Result<Self, CollectiveError> {
        let deadline = Instant::now() + timeout;
        let peers = if env.rank == 0 {
            Self::accept_all(env, deadline)?
        } else {
            vec![Self::connect(env, deadline)?]
        };
        Ok(TcpGroup {
            rank: env.rank,
            world_size: env.world_size,
            peers,
        })
    }

    fn accept_all(env: &RankEnv, deadline: Instant) -> Result<Vec<TcpStream>, CollectiveError> {
        let address = format!("0.0.0.0:{}", env.master_port);
        let listener = TcpListener::bind(&address)
            .and_then(|listener| listener.set_nonblocking(true).map(|()| listener))
            .map_err(|source| CollectiveError::Listen {
                address: address.clone(),
                source,
            })?;
        let mut peers: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
        while peers.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream
                        .set_nonblocking(false)
                        .and_then(|()| stream.set_nodelay(true))
                        .map_err(|e| lost("accepting a rank", e))?;
                    // A silent stranger must not block the meeting for ever.
                    stream
                        .set_read_timeout(Some(GREETING_TIMEOUT))
                        .map_err(|e| lost("accepting a rank", e))?;
                    let (rank, world) = greeting(&mut stream)?;
                    stream
                        .set_read_timeout(None)
                        .map_err(|e| lost("accepting a rank", e))?;
                    if world != env.world_size || rank == 0 || rank >= world {
                        return Err(CollectiveError::Job(format!(
                            "a rank says it is rank {rank} of {world}, but this job has {} ranks; fix: give every rank the same WORLD_SIZE and a distinct RANK",
                            env.world_size
                        )));
                    }
                    if peers[rank - 1].replace(stream).is_some() {
                        return Err(CollectiveError::Job(format!(
                            "two processes say they are rank {rank}; fix: give every rank a distinct RANK"
                        )));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        let missing: Vec<String> = (1..env.world_size)
                            .filter(|r| peers[r - 1].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(CollectiveError::Job(format!(
                            "ranks {} did not connect to {address} in time; fix: start all WORLD_SIZE={} ranks with the same MASTER_ADDR and MASTER_PORT",
                            missing.join(", "),
                            env.world_size
                        )));
                    }
                    sleep(RETRY);
                }
                Err(e) => return Err(lost("accepting a rank", e)),
            }
        }
        Ok(peers.into_iter().flatten().collect())
    }

    fn connect(env: &RankEnv, deadline: Instant) -> Result<TcpStream, CollectiveError> {
        let address = format!("{}:{}", env.master_addr, env.master_port);
        let mut stream = loop {
            match TcpStream::connect(&address) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() > deadline => {
                    return Err(CollectiveError::Job(format!(
                        "rank {} cannot reach rank 0 at {address}: {e}; fix: check MASTER_ADDR and MASTER_PORT, and that rank 0 started",
                        env.rank
                    )));
                }
                Err(_) => sleep(RETRY),
            }
        };
        stream
            .set_nodelay(true)
            .map_err(|e| lost("connecting", e))?;
        let hello = [env.rank as u32, env.world_size as u32]
            .map(u32::to_le_bytes)
            .concat();
        send(&mut stream, &hello).map_err(|e| lost("greeting rank 0", e))?;
        Ok(stream)
    }

    /// Rank 0's `bytes` (at most `BROADCAST_LIMIT`) on every rank (other ranks' are replaced).
    pub fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        if self.rank == 0 {
            for peer in &mut self.peers {
                send(peer, bytes).map_err(|e| lost("broadcasting", e))?;
            }
        } else {
            *bytes = receive(&mut self.peers[0], BROADCAST_LIMIT)
                .map_err(|e| lost("receiving a broadcast", e))?;
        }
        Ok(())
    }
}

/// The rank and world size a connecting rank announces.
fn greeting(stream: &mut TcpStream) -> Result<(usize, usize), CollectiveError> {
    let bytes = receive(stream, HELLO_BYTES).unwrap_or_default();
    let word = |i: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(i * 4..i * 4 + 4)?.try_into().ok()?) as usize)
    };
    match (bytes.len(), word(0), word(1)) {
        (HELLO_BYTES, Some(rank), Some(world)) => Ok((rank, world)),
        _ => Err(CollectiveError::Job("a process that is not a tigerflow rank connected to MASTER_PORT; fix: choose a port nothing else uses".into())),
    }
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn add_bytes(sum: &mut [f32], bytes: &[u8]) -> Result<(), CollectiveError> {
    if bytes.len() != sum.len() * 4 {
        return Err(CollectiveError::Job(format!(
            "ranks disagree on the gradient length ({} vs {} values); fix: give every rank the same job",
            bytes.len() / 4,
            sum.len()
        )));
    }
    for (s, chunk) in sum.iter_mut().zip(bytes.chunks_exact(4)) {
        *s += f32::from_le_bytes(chunk.try_into().expect("4-byte chunk"));
    }
    Ok(())
}

impl Collective for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&mut self, values: &mut [f32]) -> Result<(), CollectiveError> {
        if self.rank == 0 {
            for peer in &mut self.peers {
                let bytes =
                    receive(peer, values.len() * 4).map_err(|e| lost("summing gradients", e))?;
                add_bytes(values, &bytes)?;
            }
            let sum = to_bytes(values);
            for peer in &mut self.peers {
                send(peer, &sum).map_err(|e| lost("sending the sum", e))?;
            }
        } else {
            let peer = &mut self.peers[0];
            send(peer, &to_bytes(values)).map_err(|e| lost("sending gradients", e))?;
            let sum = receive(peer, values.len() * 4).map_err(|e| lost("receiving the sum", e))?;
            values.fill(0.0);
            add_bytes(values, &sum)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn env(rank: usize, world_size: usize, port: u16) -> RankEnv {
        RankEnv {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        }
    }

    #[test]
    fn every_rank_gets_the_same_sum_and_rank_zeros_broadcast() {
        let port = free_port();
        let world = 3;
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                thread::spawn(move || {
                    let mut group =
                        TcpGroup::join(&env(rank, world, port), Duration::from_secs(20)).unwrap();
                    let mut values = vec![rank as f32, 1.0, 0.5 * rank as f32];
                    group.all_reduce_sum(&mut values).unwrap();
                    let mut bytes = if rank == 0 {
                        b"nccl id".to_vec()
                    } else {
                        Vec::new()
                    };
                    group.broadcast(&mut bytes).unwrap();
                    (values, bytes)
                })
            })
            .collect();
        for handle in handles {
            let (values, bytes) = handle.join().unwrap();
            assert_eq!(values, vec![3.0, 3.0, 1.5]);
            assert_eq!(bytes, b"nccl id");
        }
    }

    #[test]
    fn a_missing_rank_is_named_after_the_timeout() {
        let err = TcpGroup::join(&env(0, 3, free_port()), Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("ranks 1, 2 did not connect"), "{err}");
    }

    #[test]
    fn a_stranger_on_the_port_is_named_not_believed() {
        let port = free_port();
        let stranger = thread::spawn(move || {
            loop {
                if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
                    // Claims an exabyte-sized message.
                    let _ = stream.write_all(&u64::MAX.to_le_bytes());
                    return;
                }
                sleep(RETRY);
            }
        });
        let err = TcpGroup::join(&env(0, 2, port), Duration::from_secs(20))
            .err()
            .unwrap()
            .to_string();
        stranger.join().unwrap();
        assert!(err.contains("not a tigerflow rank"), "{err}");
    }

    #[test]
    fn a_stopped_rank_is_an_error_not_a_hang() {
        let port = free_port();
        let other = thread::spawn(move || {
            TcpGroup::join(&env(1, 2, port), Duration::from_secs(20)).unwrap();
        });
        let mut group = TcpGroup::join(&env(0, 2, port), Duration::from_secs(20)).unwrap();
        other.join().unwrap();
        let err = group.all_reduce_sum(&mut [1.0]).unwrap_err().to_string();
        assert!(err.contains("another rank stopped"), "{err}");
    }
}
