#if canImport(Glibc)
import Glibc
#endif

/// glibc functions that Swift's Glibc module does not export (GNU extensions, <malloc.h>), found at
/// run time; callers cast the address to the function's C type.
enum GlibcSymbol {
    static func address(of name: String) -> UnsafeMutableRawPointer? {
        #if os(Linux)
        return dlsym(UnsafeMutableRawPointer(bitPattern: 0), name)  // RTLD_DEFAULT
        #else
        return nil
        #endif
    }
}
