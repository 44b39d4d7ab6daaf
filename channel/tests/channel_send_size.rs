//! An item too large for a frame is refused while it is encoded: sending a
//! 50 MB value through a 1 MiB transport never holds its encoding whole.

use std::sync::Arc;

use serde_bytes::ByteBuf;
use yuki_channel::{Channel, Error, InThreadTransport, Transport};
use yuki_testkit::CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator::new();

const MAX_FRAME: usize = 1 << 20;

#[test]
fn an_oversized_item_is_refused_without_being_encoded_whole() {
    let main = InThreadTransport::with_max_frame(MAX_FRAME);
    let child: Arc<dyn Transport> = main.connect("worker").unwrap();
    let seam: Arc<dyn Transport> = main.clone();
    let in_main = Channel::<ByteBuf>::open(&seam, "blobs").unwrap();
    let in_child = Channel::<ByteBuf>::open(&child, "blobs").unwrap();
    for channel in [&in_child, &in_main] {
        let value = ByteBuf::from(vec![1u8; 50_000_000]);
        ALLOCATOR.start();
        let err = channel.send(value).unwrap_err();
        let grew = ALLOCATOR.grown();
        assert!(
            matches!(err.error(), Error::FrameTooLarge { size, max: MAX_FRAME } if *size > 50_000_000),
            "{err:?}"
        );
        assert!(
            grew <= 2 * MAX_FRAME,
            "sending held {grew} more bytes; the encoding stops at the maximum"
        );
        assert_eq!(err.into_inner().len(), 50_000_000, "the value comes back");
    }
    // What fits still goes through.
    in_child.send(ByteBuf::from(vec![2u8; 1000])).unwrap();
    assert_eq!(in_main.recv().unwrap().len(), 1000);
}
