//! Protocol callbacks that fail: each is a fatal error of its transport
//! with asyncio's message, followed by exactly one connection_lost (D8;
//! asyncio-surface 2.4/2.5).

mod support;

use std::cell::RefCell;
use std::io::Write;
use std::net::TcpListener;
use std::rc::Rc;

use sloop::{Buffered, BufferedProtocol, Protocol, Transport};
use support::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fail {
    ConnectionMade,
    AbortInConnectionMade,
    EofReceived,
    GetBufferEmpty,
    GetBufferPanic,
    BufferUpdated,
}

struct Bad {
    fail: Fail,
    lost: Rc<RefCell<Vec<Option<std::io::ErrorKind>>>>,
    buf: Vec<u8>,
}

impl Protocol for Bad {
    fn connection_made(&mut self, t: &Transport) {
        match self.fail {
            Fail::ConnectionMade => panic!("in connection_made"),
            Fail::AbortInConnectionMade => t.abort(),
            _ => {}
        }
    }
    fn eof_received(&mut self) -> bool {
        panic!("in eof_received")
    }
    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        self.lost.borrow_mut().push(exc.map(|e| e.kind()));
    }
}

impl BufferedProtocol for Bad {
    fn get_buffer(&mut self, _: usize) -> &mut [u8] {
        match self.fail {
            Fail::GetBufferEmpty => &mut [],
            Fail::GetBufferPanic => panic!("in get_buffer"),
            _ => &mut self.buf,
        }
    }
    fn buffer_updated(&mut self, _: usize) {
        panic!("in buffer_updated")
    }
    fn connection_lost(&mut self, exc: Option<std::io::Error>) {
        self.lost.borrow_mut().push(exc.map(|e| e.kind()));
    }
}

#[test]
fn failing_callbacks_are_fatal_to_their_transport_only() {
    let cases = [
        (
            Fail::ConnectionMade,
            "Fatal error: protocol.connection_made() call failed.",
        ),
        (Fail::AbortInConnectionMade, ""),
        (
            Fail::EofReceived,
            "Fatal error: protocol.eof_received() call failed.",
        ),
        (
            Fail::GetBufferEmpty,
            "Fatal error: protocol.get_buffer() call failed.",
        ),
        (
            Fail::GetBufferPanic,
            "Fatal error: protocol.get_buffer() call failed.",
        ),
        (
            Fail::BufferUpdated,
            "Fatal error: protocol.buffer_updated() call failed.",
        ),
    ];
    for (fail, message) in cases {
        let lp = lenient_loop();
        let msgs = exception_messages(&lp);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lost = Rc::new(RefCell::new(Vec::new()));
        let bad = Bad {
            fail,
            lost: lost.clone(),
            buf: vec![0; 100],
        };
        let buffered = matches!(
            fail,
            Fail::GetBufferEmpty | Fail::GetBufferPanic | Fail::BufferUpdated
        );
        // create_connection still returns when connection_made fails.
        let t = if buffered {
            run(
                &lp,
                lp.create_connection(move || Buffered(bad), ("127.0.0.1", port)),
            )
        } else {
            run(&lp, lp.create_connection(move || bad, ("127.0.0.1", port)))
        }
        .unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        let _ = peer.write_all(b"data");
        if fail == Fail::EofReceived {
            peer.shutdown(std::net::Shutdown::Write).unwrap();
        }
        let l = lost.clone();
        run(&lp, until(move || !l.borrow().is_empty()));
        run(&lp, sloop::sleep(std::time::Duration::from_millis(5)));
        assert!(t.is_closing(), "{fail:?}");
        assert_eq!(
            lost.borrow().len(),
            1,
            "{fail:?}: exactly one connection_lost"
        );
        if message.is_empty() {
            assert!(msgs.borrow().is_empty());
            assert_eq!(lost.borrow()[0], None);
        } else {
            assert_eq!(msgs.borrow().as_slice(), [message], "{fail:?}");
            assert!(lost.borrow()[0].is_some(), "{fail:?}: lost with the error");
        }
    }
}
