#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ipckit::fuzz::mailbox_wire(data));
