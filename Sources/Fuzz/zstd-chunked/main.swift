// libFuzzer's driver on the "zstd-chunked" target of LazyPullFuzz; `make fuzz` builds it.
import LazyPullFuzz
@_silgen_name("LLVMFuzzerRunDriver")
func driver(_ argc: UnsafeMutablePointer<Int32>, _ argv: FuzzArguments, _ body: FuzzCallback) -> Int32
runFuzzer("zstd-chunked", driver)
