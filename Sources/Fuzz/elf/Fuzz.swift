// libFuzzer's entry point for the "elf" target (LazyPullFuzz.FuzzTarget); `make fuzz` builds it.
import LazyPullFuzz

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 { libFuzzerInput("elf", data, size) }
