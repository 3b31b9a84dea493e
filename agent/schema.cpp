// The SQL of sql/, embedded at build time (cmake/embed_sql.cmake).
#include "lease_store.h"

namespace lease_agent {

const std::vector<std::pair<std::string, std::string>>& schema_files() {
  static const std::vector<std::pair<std::string, std::string>> files = {
#include "schema_sql.inc"
  };
  return files;
}

}  // namespace lease_agent
